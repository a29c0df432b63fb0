-- The schema every non-DDL golden case is prepared against.
CREATE TABLE hotels (
    hotel_id BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    city TEXT,
    stars INT DEFAULT 3
);
CREATE TABLE rooms (
    hotel_id BIGINT,
    room_id BIGINT,
    date INT,
    price DOUBLE NOT NULL DEFAULT 100.0,
    reserved_by BIGINT,
    PRIMARY KEY (hotel_id, room_id, date)
) WITH (partition_by = 'hotel_id');
CREATE INDEX rooms_by_guest ON rooms (reserved_by);
CREATE TABLE items (
    item_id BIGINT PRIMARY KEY,
    title TEXT NOT NULL,
    price DOUBLE NOT NULL,
    stock BIGINT NOT NULL DEFAULT 0,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    data BYTEA,
    created TIMESTAMP
);
CREATE UNIQUE INDEX items_by_title ON items (title);
CREATE TABLE orders (
    customer_id BIGINT,
    order_id BIGINT,
    item_id BIGINT NOT NULL,
    qty BIGINT NOT NULL,
    status TEXT NOT NULL DEFAULT 'new',
    placed TIMESTAMP,
    PRIMARY KEY (customer_id, order_id)
);
CREATE INDEX orders_by_item_status ON orders (item_id, status);
CREATE TABLE posts (
    user_id BIGINT,
    at BIGINT,
    post_id BIGINT,
    body TEXT NOT NULL,
    PRIMARY KEY (user_id, at DESC, post_id)
);
