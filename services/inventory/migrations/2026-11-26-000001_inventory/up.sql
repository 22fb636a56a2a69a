-- The inventory schema: products, stock levels with their append-only
-- movement log, reservations, and the shipping rules QuoteOrder prices with.
-- All timestamps come from the service's clock, so tests can move time.

CREATE TABLE products (
    sku           text        PRIMARY KEY CHECK (sku ~ '^[A-Z0-9][A-Z0-9_-]{0,63}$'),
    display_name  text        NOT NULL CHECK (char_length(display_name) BETWEEN 1 AND 200),
    description   text        NOT NULL CHECK (char_length(description) <= 5000),
    currency_code text        NOT NULL CHECK (currency_code ~ '^[A-Z]{3}$'),
    price_minor   bigint      NOT NULL CHECK (price_minor >= 0),
    weight_grams  bigint      NOT NULL CHECK (weight_grams BETWEEN 0 AND 1000000),
    active        boolean     NOT NULL,
    version       bigint      NOT NULL DEFAULT 1,    -- etag
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

-- One row per (sku, location). on_hand is derived, so it cannot drift from
-- its parts; every part is non-negative, so no bug and no race can oversell.
-- version = the sequence of the latest movement of the level.
CREATE TABLE stock_levels (
    sku        text        NOT NULL REFERENCES products (sku),
    location   text        NOT NULL CHECK (location ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    available  bigint      NOT NULL CHECK (available >= 0),
    reserved   bigint      NOT NULL CHECK (reserved >= 0),
    committed  bigint      NOT NULL CHECK (committed >= 0),
    on_hand    bigint      NOT NULL GENERATED ALWAYS AS (available + reserved + committed) STORED,
    version    bigint      NOT NULL CHECK (version >= 1),
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (sku, location)
);

-- The append-only log: replaying a level's movements in sequence order from
-- zero yields the level. UPDATE and DELETE are refused by a trigger.
CREATE TABLE stock_movements (
    sku             text        NOT NULL,
    location        text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence >= 1),
    kind            text        NOT NULL CHECK (kind IN ('ADJUSTMENT', 'RESERVE', 'RELEASE', 'COMMIT', 'EXPIRE')),
    delta_on_hand   bigint      NOT NULL,
    delta_available bigint      NOT NULL,
    delta_reserved  bigint      NOT NULL,
    delta_committed bigint      NOT NULL,
    reason          smallint    NOT NULL DEFAULT 0,  -- StockAdjustmentReason, ADJUSTMENT only
    note            text        NOT NULL DEFAULT '',
    order_id        uuid,                            -- the reservation; NULL for ADJUSTMENT
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (sku, location, sequence),
    FOREIGN KEY (sku, location) REFERENCES stock_levels (sku, location),
    CONSTRAINT stock_movements_balanced
        CHECK (delta_on_hand = delta_available + delta_reserved + delta_committed),
    CONSTRAINT stock_movements_reservation
        CHECK ((kind = 'ADJUSTMENT') = (order_id IS NULL))
);
CREATE INDEX stock_movements_time ON stock_movements (created_at, sku, location, sequence);
CREATE INDEX stock_movements_order ON stock_movements (order_id) WHERE order_id IS NOT NULL;

CREATE FUNCTION stock_movements_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'stock_movements is append-only';
END $$;
CREATE TRIGGER stock_movements_append_only
    BEFORE UPDATE OR DELETE ON stock_movements
    FOR EACH ROW EXECUTE FUNCTION stock_movements_append_only();

-- A reservation per order; ACTIVE is the only non-terminal state.
CREATE TABLE reservations (
    order_id   uuid        PRIMARY KEY,
    state      text        NOT NULL CHECK (state IN ('ACTIVE', 'COMMITTED', 'RELEASED', 'EXPIRED')),
    expire_at  timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
-- The sweeper's scan: only ACTIVE reservations, by expiry.
CREATE INDEX reservations_active_expiry ON reservations (expire_at) WHERE state = 'ACTIVE';

CREATE TABLE reservation_lines (
    order_id uuid    NOT NULL REFERENCES reservations (order_id),
    position integer NOT NULL,                       -- request order
    sku      text    NOT NULL,
    location text    NOT NULL,
    quantity bigint  NOT NULL CHECK (quantity BETWEEN 1 AND 10000),
    PRIMARY KEY (order_id, sku),
    FOREIGN KEY (sku, location) REFERENCES stock_levels (sku, location)
);
CREATE INDEX reservation_lines_level ON reservation_lines (sku, location);

-- Shipping rules. A destination country maps to exactly one zone (the
-- primary key); the zone listing '*' catches every country no zone lists.
-- The price of an order is that of the zone's band in the quote currency
-- with the smallest max_weight_grams >= the order's total weight; heavier
-- orders, or currencies without bands, have no rule (NO_SHIPPING_RULE).
--
--   zone      countries                                    EUR bands (≤1 kg / ≤5 kg / ≤20 kg)   USD bands
--   domestic  DE                                           4.90 / 6.90 / 12.90                  -
--   eu        the 26 other EU member states                9.90 / 14.90 / 29.90                 -
--   world     * (everything else)                          19.90 / 39.90 / 79.90                21.90 / 43.90 / 87.90
--
-- Over 20 kg: no rule anywhere.
CREATE TABLE shipping_zones (
    zone         text PRIMARY KEY CHECK (zone ~ '^[a-z][a-z0-9-]{0,62}$'),
    display_name text NOT NULL
);

CREATE TABLE shipping_zone_countries (
    country_code text PRIMARY KEY CHECK (country_code ~ '^([A-Z]{2}|\*)$'),
    zone         text NOT NULL REFERENCES shipping_zones (zone)
);
CREATE INDEX shipping_zone_countries_zone ON shipping_zone_countries (zone);

CREATE TABLE shipping_rates (
    zone             text   NOT NULL REFERENCES shipping_zones (zone),
    currency_code    text   NOT NULL CHECK (currency_code ~ '^[A-Z]{3}$'),
    max_weight_grams bigint NOT NULL CHECK (max_weight_grams > 0),
    price_minor      bigint NOT NULL CHECK (price_minor >= 0),
    PRIMARY KEY (zone, currency_code, max_weight_grams)
);

INSERT INTO shipping_zones (zone, display_name) VALUES
    ('domestic', 'Germany'),
    ('eu', 'European Union'),
    ('world', 'Rest of the world');

INSERT INTO shipping_zone_countries (country_code, zone) VALUES
    ('DE', 'domestic'),
    ('AT', 'eu'), ('BE', 'eu'), ('BG', 'eu'), ('CY', 'eu'), ('CZ', 'eu'), ('DK', 'eu'),
    ('EE', 'eu'), ('ES', 'eu'), ('FI', 'eu'), ('FR', 'eu'), ('GR', 'eu'), ('HR', 'eu'),
    ('HU', 'eu'), ('IE', 'eu'), ('IT', 'eu'), ('LT', 'eu'), ('LU', 'eu'), ('LV', 'eu'),
    ('MT', 'eu'), ('NL', 'eu'), ('PL', 'eu'), ('PT', 'eu'), ('RO', 'eu'), ('SE', 'eu'),
    ('SI', 'eu'), ('SK', 'eu'),
    ('*', 'world');

INSERT INTO shipping_rates (zone, currency_code, max_weight_grams, price_minor) VALUES
    ('domestic', 'EUR', 1000, 490), ('domestic', 'EUR', 5000, 690), ('domestic', 'EUR', 20000, 1290),
    ('eu', 'EUR', 1000, 990), ('eu', 'EUR', 5000, 1490), ('eu', 'EUR', 20000, 2990),
    ('world', 'EUR', 1000, 1990), ('world', 'EUR', 5000, 3990), ('world', 'EUR', 20000, 7990),
    ('world', 'USD', 1000, 2190), ('world', 'USD', 5000, 4390), ('world', 'USD', 20000, 8790);
