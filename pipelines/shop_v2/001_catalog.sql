-- The catalog's tables, empty; steps 2 and 3 fill them.
-- rowshift:up
CREATE TABLE categories (
    code  TEXT PRIMARY KEY,
    title TEXT NOT NULL
);
CREATE TABLE products (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    sku           TEXT NOT NULL,
    category_code TEXT NOT NULL REFERENCES categories (code),
    title         TEXT NOT NULL,
    price_cents   INTEGER NOT NULL CHECK (price_cents >= 0),
    -- v1's status ('active' / 'discontinued') becomes a flag.
    active        INTEGER NOT NULL CHECK (active IN (0, 1))
);

-- rowshift:down
DROP TABLE products;
DROP TABLE categories;
