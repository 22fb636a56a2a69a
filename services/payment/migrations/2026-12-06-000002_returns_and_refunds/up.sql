-- Returns, goodwill refunds and cancellation mid-checkout.
--
-- Every refund of an order claims its amount on the order first, under the
-- order's row lock: refund_claimed_minor is what the order's cancellations,
-- received returns and goodwill refunds have promised, done or not yet;
-- refunded_minor what they have paid back. A new refund is refused (or, for
-- cancellations and returns, capped) past total - refund_claimed, so
-- concurrent refunds never promise more than was captured.
ALTER TABLE orders
    ADD COLUMN refund_claimed_minor bigint NOT NULL DEFAULT 0 CHECK (refund_claimed_minor >= 0),
    -- CancelOrder of an order still in checkout: the request that asked,
    -- kept until the saga compensates (before the pivot) or, past it,
    -- completes and turns it into a cancellation in the same transaction.
    ADD COLUMN cancel_request_id  uuid,
    ADD COLUMN cancel_fingerprint bytea,
    ADD COLUMN cancel_reason      text CHECK (char_length(cancel_reason) BETWEEN 1 AND 500),
    ADD CONSTRAINT orders_cancel_request_whole
        CHECK ((cancel_request_id IS NULL) = (cancel_fingerprint IS NULL)
           AND (cancel_request_id IS NULL) = (cancel_reason IS NULL));
UPDATE orders SET refund_claimed_minor = refunded_minor + coalesce(
    (SELECT sum(refund_minor) FROM cancellations c
      WHERE c.order_id = orders.id AND c.state = 'PENDING'), 0);
ALTER TABLE orders
    ADD CONSTRAINT orders_refunded_within_claimed CHECK (refunded_minor <= refund_claimed_minor);

-- Units of a line a return has asked for (REQUESTED or later): never more
-- than shipped.
ALTER TABLE order_lines
    ADD COLUMN returned bigint NOT NULL DEFAULT 0 CHECK (returned >= 0),
    ADD CONSTRAINT order_lines_returned_within CHECK (returned <= shipped);

-- A return: the customer asks (REQUESTED, its units claimed on the order
-- lines), the warehouse receives it and decides per line what is restocked
-- and what written off (RECEIVING: the refund claimed on the order), then
-- inventory takes the units back and payment refunds (RECEIVED).
CREATE TABLE returns (
    id                  uuid        PRIMARY KEY,
    order_id            uuid        NOT NULL REFERENCES orders (id),
    request_id          uuid        NOT NULL,
    fingerprint         bytea       NOT NULL,
    state               text        NOT NULL CHECK (state IN ('REQUESTED', 'RECEIVING', 'RECEIVED')),
    reason              text        NOT NULL CHECK (reason IN ('DAMAGED', 'DEFECTIVE', 'WRONG_ITEM',
                                                               'NOT_AS_DESCRIBED', 'NO_LONGER_NEEDED', 'OTHER')),
    note                text        NOT NULL CHECK (char_length(note) <= 500),
    refund_minor        bigint      CHECK (refund_minor >= 0),
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    received_at         timestamptz,
    UNIQUE (order_id, request_id),
    CHECK ((state = 'REQUESTED') = (refund_minor IS NULL)),
    CHECK ((state = 'RECEIVED') = (received_at IS NOT NULL))
);
CREATE INDEX returns_receiving ON returns (updated_at) WHERE state = 'RECEIVING';
CREATE INDEX returns_order ON returns (order_id, id);

CREATE TABLE return_lines (
    return_id   uuid    NOT NULL REFERENCES returns (id),
    position    integer NOT NULL,
    sku         text    NOT NULL,
    quantity    bigint  NOT NULL CHECK (quantity BETWEEN 1 AND 10000),
    restocked   bigint  NOT NULL DEFAULT 0 CHECK (restocked >= 0),
    written_off bigint  NOT NULL DEFAULT 0 CHECK (written_off >= 0),
    PRIMARY KEY (return_id, position),
    UNIQUE (return_id, sku),
    CHECK (restocked + written_off IN (0, quantity))
);

-- Goodwill refunds: an admin gives part of an order's money back with a
-- reason (PENDING, its amount claimed on the order), payment refunds
-- (DONE).
CREATE TABLE order_refunds (
    id           uuid        PRIMARY KEY,
    order_id     uuid        NOT NULL REFERENCES orders (id),
    request_id   uuid        NOT NULL,
    fingerprint  bytea       NOT NULL,
    state        text        NOT NULL CHECK (state IN ('PENDING', 'DONE')),
    reason       text        NOT NULL CHECK (char_length(reason) BETWEEN 1 AND 500),
    amount_minor bigint      NOT NULL CHECK (amount_minor > 0),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    UNIQUE (order_id, request_id)
);
CREATE INDEX order_refunds_pending ON order_refunds (updated_at) WHERE state = 'PENDING';

-- Every flow after checkout records the remote steps it finished
-- (steps_done: a replay after a crash, or days later when the callee's
-- idempotency keys have expired, skips them) and when recovery last tried it
-- (attempted_at: recovery takes the least recently tried first, so flows
-- waiting for an operator never starve the others; updated_at still says
-- since when it waits, for the audit).
ALTER TABLE cancellations
    ADD COLUMN steps_done   text[]      NOT NULL DEFAULT '{}',
    ADD COLUMN attempted_at timestamptz;
ALTER TABLE returns
    ADD COLUMN steps_done   text[]      NOT NULL DEFAULT '{}',
    ADD COLUMN attempted_at timestamptz;
ALTER TABLE order_refunds
    ADD COLUMN steps_done   text[]      NOT NULL DEFAULT '{}',
    ADD COLUMN attempted_at timestamptz;
ALTER TABLE shipments
    ADD COLUMN attempted_at timestamptz;
