-- Shipped units come back: RestockReservation puts returned units back on
-- the shelf (a RETURN movement: on_hand and available rise);
-- WriteOffReservation records returned units that cannot be sold (a DAMAGED
-- movement: they never re-enter on_hand). A line never takes back more than
-- it shipped.
ALTER TABLE reservation_lines
    ADD COLUMN restocked   bigint NOT NULL DEFAULT 0 CHECK (restocked >= 0),
    ADD COLUMN written_off bigint NOT NULL DEFAULT 0 CHECK (written_off >= 0),
    ADD CONSTRAINT reservation_lines_returned_within CHECK (restocked + written_off <= shipped);

ALTER TABLE stock_movements
    DROP CONSTRAINT stock_movements_kind_check,
    ADD CONSTRAINT stock_movements_kind_check
        CHECK (kind IN ('ADJUSTMENT', 'RESERVE', 'RELEASE', 'COMMIT', 'EXPIRE', 'SHIP', 'UNCOMMIT',
                        'RETURN', 'DAMAGED'));
