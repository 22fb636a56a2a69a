-- Committed units leave the building or come back: ShipReservation ships
-- some or all of a committed reservation's lines, in as many shipments as it
-- takes; UncommitReservation returns units that will not ship (the order
-- canceled them) to available. Each line counts what has shipped and what
-- was returned, never more than it holds together; each is a SHIP or an
-- UNCOMMIT movement per line.
ALTER TABLE reservation_lines
    ADD COLUMN shipped    bigint NOT NULL DEFAULT 0 CHECK (shipped >= 0),
    ADD COLUMN uncommitted bigint NOT NULL DEFAULT 0 CHECK (uncommitted >= 0),
    ADD CONSTRAINT reservation_lines_settled_within CHECK (shipped + uncommitted <= quantity);

ALTER TABLE stock_movements
    DROP CONSTRAINT stock_movements_kind_check,
    ADD CONSTRAINT stock_movements_kind_check
        CHECK (kind IN ('ADJUSTMENT', 'RESERVE', 'RELEASE', 'COMMIT', 'EXPIRE', 'SHIP', 'UNCOMMIT'));
