-- SQL before and after a data move: the table, then its rows (004_customers.toml), then
-- the unique index, built after the bulk load.
-- rowshift:up
CREATE TABLE customers (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    email      TEXT NOT NULL,
    first_name TEXT NOT NULL,
    last_name  TEXT NOT NULL,
    country    TEXT
);

-- rowshift:after
CREATE UNIQUE INDEX customers_email ON customers (email);

-- rowshift:down
DROP INDEX customers_email;
DROP TABLE customers;
