ALTER TABLE stock_movements
    DROP CONSTRAINT stock_movements_kind_check,
    ADD CONSTRAINT stock_movements_kind_check
        CHECK (kind IN ('ADJUSTMENT', 'RESERVE', 'RELEASE', 'COMMIT', 'EXPIRE'));

ALTER TABLE reservation_lines
    DROP CONSTRAINT reservation_lines_settled_within,
    DROP COLUMN uncommitted,
    DROP COLUMN shipped;
