-- Checkout orders: the durable state of each order's saga. The saga writes
-- its next state here BEFORE the step that state names, so a crash between
-- any two steps leaves an order the recovery worker can resume.

CREATE TABLE orders (
    id                        uuid        PRIMARY KEY,   -- UUIDv7; also the reservation's order id
    customer_id               uuid        NOT NULL,
    request_id                uuid        NOT NULL,      -- PlaceOrder's idempotency key
    fingerprint               bytea       NOT NULL,      -- sha256 of the request's parameters
    shipping_address          text        NOT NULL,
    shipping_address_snapshot bytea,                     -- encoded backroom.account.v1.Address
    payment_method            text        NOT NULL,
    currency_code             text        NOT NULL,
    subtotal_minor            bigint,
    shipping_minor            bigint,
    total_minor               bigint,
    shipping_zone             text        NOT NULL DEFAULT '',
    state                     text        NOT NULL,      -- PENDING … COMPLETED | FAILED
    failure_reason            text,
    failure_message           text,
    failure_metadata          text,                      -- JSON object of strings
    failed_at_state           text,                      -- the step that failed (what to undo)
    payment_intent            text,                      -- paymentIntents/{id} once created
    reservation               text,                      -- reservations/{order} once reserved
    attempts                  integer     NOT NULL DEFAULT 0, -- failed attempts of the current step
    lease_owner               uuid,                      -- the worker driving the saga
    lease_until               timestamptz,
    next_attempt_at           timestamptz NOT NULL,      -- backoff: not before this
    created_at                timestamptz NOT NULL,
    updated_at                timestamptz NOT NULL,
    CONSTRAINT orders_request_key UNIQUE (customer_id, request_id),
    CONSTRAINT orders_state_known CHECK (state IN (
        'PENDING', 'RESERVING', 'AUTHORIZING', 'COMMITTING', 'CAPTURING',
        'COMPLETED', 'COMPENSATING', 'FAILED')),
    CONSTRAINT orders_totals_add_up CHECK (
        total_minor IS NULL OR total_minor = subtotal_minor + shipping_minor),
    CONSTRAINT orders_failure_when_failing CHECK (
        (state IN ('COMPENSATING', 'FAILED')) = (failure_reason IS NOT NULL))
);
CREATE INDEX orders_customer ON orders (customer_id, id DESC);
-- The recovery worker's scan: unfinished orders by due time.
CREATE INDEX orders_unfinished ON orders (next_attempt_at)
    WHERE state NOT IN ('COMPLETED', 'FAILED');

CREATE TABLE order_lines (
    order_id         uuid    NOT NULL REFERENCES orders (id),
    position         integer NOT NULL,
    sku              text    NOT NULL,
    quantity         bigint  NOT NULL CHECK (quantity > 0),
    display_name     text    NOT NULL DEFAULT '',
    unit_price_minor bigint,
    line_total_minor bigint,
    PRIMARY KEY (order_id, position)
);
