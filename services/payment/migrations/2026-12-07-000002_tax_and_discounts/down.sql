ALTER TABLE order_lines DROP COLUMN discount_minor;
ALTER TABLE orders DROP CONSTRAINT orders_totals_add_up,
    DROP COLUMN quote_snapshot, DROP COLUMN tax_minor, DROP COLUMN discount_minor,
    DROP COLUMN discount_codes,
    ADD CONSTRAINT orders_totals_add_up CHECK (
        total_minor IS NULL OR total_minor = subtotal_minor + shipping_minor);
ALTER TABLE refunds DROP COLUMN tax;
ALTER TABLE payment_intents DROP CONSTRAINT payment_intents_tax,
    DROP COLUMN tax_refunded, DROP COLUMN tax_received, DROP COLUMN tax;
DELETE FROM ledger_accounts WHERE code = 'tax_payable';
