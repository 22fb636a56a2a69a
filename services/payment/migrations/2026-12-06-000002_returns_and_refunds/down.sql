ALTER TABLE shipments DROP COLUMN attempted_at;
ALTER TABLE cancellations DROP COLUMN attempted_at, DROP COLUMN steps_done;
DROP TABLE order_refunds;
DROP TABLE return_lines;
DROP TABLE returns;
ALTER TABLE order_lines
    DROP CONSTRAINT order_lines_returned_within,
    DROP COLUMN returned;
ALTER TABLE orders
    DROP CONSTRAINT orders_refunded_within_claimed,
    DROP CONSTRAINT orders_cancel_request_whole,
    DROP COLUMN cancel_reason,
    DROP COLUMN cancel_fingerprint,
    DROP COLUMN cancel_request_id,
    DROP COLUMN refund_claimed_minor;
