DROP TABLE cancellation_lines;
DROP TABLE cancellations;
DROP TABLE shipment_lines;
DROP TABLE shipments;
ALTER TABLE orders DROP COLUMN refunded_minor;
ALTER TABLE order_lines
    DROP CONSTRAINT order_lines_settled_within,
    DROP COLUMN canceled,
    DROP COLUMN shipped;
