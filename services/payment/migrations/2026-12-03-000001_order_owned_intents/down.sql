-- Orders waiting for an operator go back to capturing (the recovery worker
-- retries them again, as before NEEDS_ATTENTION existed).
UPDATE orders SET state = 'CAPTURING', failure_reason = NULL, failure_message = NULL,
    failure_metadata = NULL, failed_at_state = NULL
    WHERE state = 'NEEDS_ATTENTION';
DROP INDEX orders_unfinished;
CREATE INDEX orders_unfinished ON orders (next_attempt_at)
    WHERE state NOT IN ('COMPLETED', 'FAILED');
ALTER TABLE orders DROP CONSTRAINT orders_failure_when_failing;
ALTER TABLE orders ADD CONSTRAINT orders_failure_when_failing CHECK (
    (state IN ('COMPENSATING', 'FAILED')) = (failure_reason IS NOT NULL));
ALTER TABLE orders DROP CONSTRAINT orders_state_known;
ALTER TABLE orders ADD CONSTRAINT orders_state_known CHECK (state IN (
    'PENDING', 'RESERVING', 'AUTHORIZING', 'COMMITTING', 'CAPTURING',
    'COMPLETED', 'COMPENSATING', 'FAILED'));

DROP INDEX payment_intents_order;
ALTER TABLE payment_intents DROP COLUMN order_id;
