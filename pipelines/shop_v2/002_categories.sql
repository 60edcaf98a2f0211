-- rowshift:down
DELETE FROM categories;
