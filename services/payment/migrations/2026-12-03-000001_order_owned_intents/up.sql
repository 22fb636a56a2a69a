-- An order's payment belongs to the order. The intents checkout creates name
-- their order; through PaymentService only checkout acts on them (see
-- payment.proto, PaymentIntent.order), and the authorization-expiry sweeper
-- leaves them alone while their order's saga runs.
ALTER TABLE payment_intents ADD COLUMN order_id uuid REFERENCES orders (id);
-- Intents checkout created before this column: the order that recorded them.
UPDATE payment_intents i SET order_id = o.id
    FROM orders o WHERE o.payment_intent = 'paymentIntents/' || i.id::text;
-- One payment per order.
CREATE UNIQUE INDEX payment_intents_order ON payment_intents (order_id)
    WHERE order_id IS NOT NULL;

-- NEEDS_ATTENTION: the stock is committed but the payment can no longer be
-- captured; terminal for the saga, an operator resolves it (`failure` says
-- why).
ALTER TABLE orders DROP CONSTRAINT orders_state_known;
ALTER TABLE orders ADD CONSTRAINT orders_state_known CHECK (state IN (
    'PENDING', 'RESERVING', 'AUTHORIZING', 'COMMITTING', 'CAPTURING',
    'COMPLETED', 'COMPENSATING', 'FAILED', 'NEEDS_ATTENTION'));
ALTER TABLE orders DROP CONSTRAINT orders_failure_when_failing;
ALTER TABLE orders ADD CONSTRAINT orders_failure_when_failing CHECK (
    (state IN ('COMPENSATING', 'FAILED', 'NEEDS_ATTENTION')) = (failure_reason IS NOT NULL));
DROP INDEX orders_unfinished;
CREATE INDEX orders_unfinished ON orders (next_attempt_at)
    WHERE state NOT IN ('COMPLETED', 'FAILED', 'NEEDS_ATTENTION');
