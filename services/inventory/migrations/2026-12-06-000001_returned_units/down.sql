ALTER TABLE stock_movements
    DROP CONSTRAINT stock_movements_kind_check,
    ADD CONSTRAINT stock_movements_kind_check
        CHECK (kind IN ('ADJUSTMENT', 'RESERVE', 'RELEASE', 'COMMIT', 'EXPIRE', 'SHIP', 'UNCOMMIT'));

ALTER TABLE reservation_lines
    DROP CONSTRAINT reservation_lines_returned_within,
    DROP COLUMN written_off,
    DROP COLUMN restocked;
