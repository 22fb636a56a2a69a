-- Committed units leave the building: ShipReservation ships some or all of
-- a committed reservation's lines, in as many shipments as it takes. Each
-- line counts what has shipped (never more than it holds), and each
-- shipment is a SHIP movement per line: committed, and so on_hand, fall.
ALTER TABLE reservation_lines
    ADD COLUMN shipped bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT reservation_lines_shipped_within CHECK (shipped BETWEEN 0 AND quantity);

ALTER TABLE stock_movements
    DROP CONSTRAINT stock_movements_kind_check,
    ADD CONSTRAINT stock_movements_kind_check
        CHECK (kind IN ('ADJUSTMENT', 'RESERVE', 'RELEASE', 'COMMIT', 'EXPIRE', 'SHIP'));
