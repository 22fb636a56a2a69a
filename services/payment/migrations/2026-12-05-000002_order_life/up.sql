-- The order's life after checkout.
--
-- Shipments: an order's record of what left the warehouse. A completed
-- order ships in one or more shipments (CreateShipment), each first stored
-- PENDING with its lines — the units it claims count against what remains,
-- so concurrent shipments cannot claim more than was ordered — then shipped
-- at inventory (ShipReservation, request id = the shipment's id), then
-- SHIPPED, adding its units to the order lines' `shipped`. A PENDING
-- shipment that a crash left behind is finished by the recovery worker.
ALTER TABLE order_lines
    ADD COLUMN shipped  bigint NOT NULL DEFAULT 0 CHECK (shipped >= 0),
    ADD COLUMN canceled bigint NOT NULL DEFAULT 0 CHECK (canceled >= 0),
    ADD CONSTRAINT order_lines_settled_within CHECK (shipped + canceled <= quantity);

-- What the order's refunds returned so far (DONE cancellations).
ALTER TABLE orders
    ADD COLUMN refunded_minor bigint NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0);

CREATE TABLE shipments (
    id              uuid        PRIMARY KEY,
    order_id        uuid        NOT NULL REFERENCES orders (id),
    -- The request id of the CreateShipment that made it: one shipment per
    -- order and request id, whoever retries.
    request_id      uuid        NOT NULL,
    fingerprint     bytea       NOT NULL,
    state           text        NOT NULL CHECK (state IN ('PENDING', 'SHIPPED', 'FAILED')),
    carrier         text        NOT NULL CHECK (char_length(carrier) BETWEEN 1 AND 100),
    tracking_number text        NOT NULL CHECK (char_length(tracking_number) BETWEEN 1 AND 100),
    failure_reason  text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    UNIQUE (order_id, request_id),
    CHECK ((state = 'FAILED') = (failure_reason IS NOT NULL))
);
CREATE INDEX shipments_pending ON shipments (updated_at) WHERE state = 'PENDING';

CREATE TABLE shipment_lines (
    shipment_id uuid   NOT NULL REFERENCES shipments (id),
    position    integer NOT NULL,
    sku         text   NOT NULL,
    quantity    bigint NOT NULL CHECK (quantity BETWEEN 1 AND 10000),
    PRIMARY KEY (shipment_id, position),
    UNIQUE (shipment_id, sku)
);

-- Cancellations: the customer or an admin cancels what a completed order has
-- not shipped. A cancellation is stored PENDING with its lines, which count
-- as canceled at once (order_lines.canceled, under the order's row lock:
-- a racing shipment finds them taken); then inventory returns their stock
-- (UncommitReservation) and payment refunds their amount (CreateRefund),
-- each with a request id derived from the cancellation; then it is DONE and
-- the order's refunded_minor grows. The recovery worker finishes a PENDING
-- one a crash left behind.
CREATE TABLE cancellations (
    id               uuid        PRIMARY KEY,
    order_id         uuid        NOT NULL REFERENCES orders (id),
    request_id       uuid        NOT NULL,
    fingerprint      bytea       NOT NULL,
    state            text        NOT NULL CHECK (state IN ('PENDING', 'DONE')),
    reason           text        NOT NULL CHECK (char_length(reason) BETWEEN 1 AND 500),
    refund_minor     bigint      NOT NULL CHECK (refund_minor >= 0),
    refunds_shipping boolean     NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    UNIQUE (order_id, request_id)
);
CREATE INDEX cancellations_pending ON cancellations (updated_at) WHERE state = 'PENDING';

CREATE TABLE cancellation_lines (
    cancellation_id uuid    NOT NULL REFERENCES cancellations (id),
    position        integer NOT NULL,
    sku             text    NOT NULL,
    quantity        bigint  NOT NULL CHECK (quantity BETWEEN 1 AND 10000),
    PRIMARY KEY (cancellation_id, position),
    UNIQUE (cancellation_id, sku)
);
