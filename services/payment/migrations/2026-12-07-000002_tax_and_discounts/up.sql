-- VAT and discounts reach payment: an intent knows the VAT its amount
-- contains (captures credit it to tax_payable, refunds reverse it in
-- proportion), and an order keeps the quote it was placed at — its tax
-- lines and discounts as they were, whatever rates do later.

INSERT INTO ledger_accounts (code, display_name, kind) VALUES
    ('tax_payable', 'VAT payable', 'liability');

ALTER TABLE payment_intents
    ADD COLUMN tax          bigint NOT NULL DEFAULT 0,
    ADD COLUMN tax_received bigint NOT NULL DEFAULT 0,
    ADD COLUMN tax_refunded bigint NOT NULL DEFAULT 0,
    ADD CONSTRAINT payment_intents_tax CHECK (
        0 <= tax AND tax <= amount
        AND 0 <= tax_received AND tax_received <= tax
        AND 0 <= tax_refunded AND tax_refunded <= tax_received);

ALTER TABLE refunds
    ADD COLUMN tax bigint NOT NULL DEFAULT 0 CHECK (tax >= 0);

ALTER TABLE orders
    ADD COLUMN discount_codes text[]  NOT NULL DEFAULT '{}',
    -- Σ discounts; NULL until quoted. total = subtotal − discount + shipping.
    ADD COLUMN discount_minor bigint  CHECK (discount_minor >= 0),
    -- The VAT contained in total_minor; NULL until quoted.
    ADD COLUMN tax_minor      bigint  CHECK (tax_minor >= 0),
    -- The inventory quote as the order was priced: an encoded
    -- backroom.inventory.v1.Quote (tax lines, discounts), never rewritten.
    ADD COLUMN quote_snapshot bytea,
    DROP CONSTRAINT orders_totals_add_up,
    ADD CONSTRAINT orders_totals_add_up CHECK (
        total_minor IS NULL
        OR total_minor = subtotal_minor - coalesce(discount_minor, 0) + shipping_minor);

ALTER TABLE order_lines
    -- The line's share of the discount; NULL until quoted.
    ADD COLUMN discount_minor bigint CHECK (discount_minor >= 0);
