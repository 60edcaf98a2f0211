-- rowshift:down
DELETE FROM order_items;
