-- Shipments: an order's record of what left the warehouse. A completed
-- order ships in one or more shipments (CreateShipment), each first stored
-- PENDING with its lines — the units it claims count against what remains,
-- so concurrent shipments cannot claim more than was ordered — then shipped
-- at inventory (ShipReservation, request id = the shipment's id), then
-- SHIPPED, adding its units to the order lines' `shipped`. A PENDING
-- shipment that a crash left behind is finished by the recovery worker.
ALTER TABLE order_lines
    ADD COLUMN shipped bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT order_lines_shipped_within CHECK (shipped BETWEEN 0 AND quantity);

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
