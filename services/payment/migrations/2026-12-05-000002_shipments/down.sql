DROP TABLE shipment_lines;
DROP TABLE shipments;
ALTER TABLE order_lines
    DROP CONSTRAINT order_lines_shipped_within,
    DROP COLUMN shipped;
