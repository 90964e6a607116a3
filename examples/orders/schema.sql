-- The orders example's schema and seed data: `runway sql apply examples/orders/schema.sql`
-- (`runway up` applies it for you). Functions never change the schema; the operator does.
CREATE TABLE IF NOT EXISTS customers (
    id    INTEGER PRIMARY KEY,
    name  TEXT NOT NULL,
    card  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    id          INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (id),
    total       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_customer ON orders (customer_id);
CREATE TABLE IF NOT EXISTS audit_log (
    id   INTEGER PRIMARY KEY,
    msg  TEXT NOT NULL
);
INSERT OR IGNORE INTO customers (id, name, card) VALUES
    (1, 'Ada Lovelace', '4111-1111-1111-1111'),
    (2, 'Grace Hopper', '5500-0000-0000-0004');
INSERT OR IGNORE INTO orders (id, customer_id, total) VALUES (1, 1, 42.5), (2, 2, 99.0), (3, 1, 7.25);
