-- rowshift:up
CREATE TABLE payments (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    order_id     INTEGER NOT NULL REFERENCES orders (id),
    amount_cents INTEGER NOT NULL,
    method       TEXT NOT NULL CHECK (method IN ('card', 'transfer', 'voucher')),
    paid_at      TEXT NOT NULL
);

-- rowshift:after
CREATE INDEX payments_order ON payments (order_id);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE UNIQUE INDEX products_sku ON products (sku);

-- rowshift:down
DROP INDEX products_sku;
DROP INDEX orders_customer;
DROP INDEX payments_order;
DROP TABLE payments;
