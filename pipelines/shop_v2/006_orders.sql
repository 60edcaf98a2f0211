-- rowshift:down
DELETE FROM orders;
