-- rowshift:down
DELETE FROM products;
