-- Pricing: a product's tax category and its prices in other currencies, VAT
-- rates per (country, category) with the date each takes effect, and
-- discount codes whose uses reservations hold the way they hold stock.

ALTER TABLE products
    ADD COLUMN tax_category text NOT NULL DEFAULT 'standard'
        CHECK (tax_category IN ('standard', 'reduced', 'zero')),
    -- Prices in currencies other than currency_code: parallel arrays, one
    -- entry per currency, ascending by currency.
    ADD COLUMN other_currencies text[] NOT NULL DEFAULT '{}',
    ADD COLUMN other_prices bigint[] NOT NULL DEFAULT '{}',
    ADD CONSTRAINT products_other_prices CHECK (
        cardinality(other_currencies) = cardinality(other_prices)
        AND cardinality(other_currencies) <= 20
        AND 0 <= ALL (other_prices)
        AND NOT (currency_code = ANY (other_currencies)));

-- A rate is never edited: a change is a new row with a later start_at; the
-- rate in effect at t is the row with the latest start_at <= t.
CREATE TABLE tax_rates (
    id           uuid        PRIMARY KEY,
    country_code text        NOT NULL CHECK (country_code ~ '^[A-Z]{2}$'),
    category     text        NOT NULL CHECK (category IN ('standard', 'reduced', 'zero')),
    rate_bp      integer     NOT NULL CHECK (rate_bp BETWEEN 0 AND 10000),
    start_at     timestamptz NOT NULL,
    created_at   timestamptz NOT NULL,
    UNIQUE (country_code, category, start_at)
);

CREATE TABLE discount_codes (
    code                   text        PRIMARY KEY CHECK (code ~ '^[A-Z0-9][A-Z0-9_-]{0,31}$'),
    percent_bp             integer     CHECK (percent_bp BETWEEN 1 AND 10000),
    amount_minor           bigint      CHECK (amount_minor BETWEEN 1 AND 99999999),
    -- Set for a fixed amount or a minimum subtotal: the only currency it
    -- applies to.
    currency_code          text        CHECK (currency_code ~ '^[A-Z]{3}$'),
    minimum_subtotal_minor bigint      CHECK (minimum_subtotal_minor >= 0),
    start_at               timestamptz NOT NULL,
    end_at                 timestamptz,
    usage_limit            bigint      CHECK (usage_limit >= 0),
    per_customer_limit     bigint      CHECK (per_customer_limit >= 0),
    stackable              boolean     NOT NULL,
    active                 boolean     NOT NULL,
    -- Uses held by reservations (ACTIVE or COMMITTED, not given back).
    -- ReserveStock takes one with a conditional UPDATE
    -- (uses < usage_limit), so no concurrency over-redeems; a lowered
    -- usage_limit may sit below it.
    uses                   bigint      NOT NULL DEFAULT 0 CHECK (uses >= 0),
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL,
    CHECK ((percent_bp IS NULL) <> (amount_minor IS NULL)),
    CHECK ((amount_minor IS NULL AND minimum_subtotal_minor IS NULL) OR currency_code IS NOT NULL),
    CHECK (end_at IS NULL OR end_at > start_at)
);

-- One row per (reservation, code): the use it holds, until given back.
CREATE TABLE discount_redemptions (
    order_id   uuid        NOT NULL REFERENCES reservations (order_id),
    code       text        NOT NULL REFERENCES discount_codes (code),
    customer   uuid        NOT NULL,
    returned   boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (order_id, code)
);
CREATE INDEX discount_redemptions_customer ON discount_redemptions (code, customer) WHERE NOT returned;

-- The VAT rates of the EU member states: standard, the main reduced rate
-- (the standard one where a country has none: DK) and zero, as published in
-- the European Commission's "VAT rates applied in the Member States"
-- (2026). The seed's start_at is the epoch, so every clock sees them in
-- effect; later changes are scheduled with CreateTaxRate. Verify against
-- the tax office before relying on them.
INSERT INTO tax_rates (id, country_code, category, rate_bp, start_at, created_at)
SELECT gen_random_uuid(), r.country_code, c.category,
       CASE c.category WHEN 'standard' THEN r.standard_bp WHEN 'reduced' THEN r.reduced_bp ELSE 0 END,
       'epoch', now()
  FROM (VALUES
        ('AT', 2000, 1000), ('BE', 2100, 600), ('BG', 2000, 900), ('CY', 1900, 500),
        ('CZ', 2100, 1200), ('DE', 1900, 700), ('DK', 2500, 2500), ('EE', 2400, 900),
        ('ES', 2100, 1000), ('FI', 2550, 1400), ('FR', 2000, 550), ('GR', 2400, 1300),
        ('HR', 2500, 500), ('HU', 2700, 500), ('IE', 2300, 1350), ('IT', 2200, 1000),
        ('LT', 2100, 900), ('LU', 1700, 800), ('LV', 2100, 1200), ('MT', 1800, 700),
        ('NL', 2100, 900), ('PL', 2300, 800), ('PT', 2300, 600), ('RO', 2100, 1100),
        ('SE', 2500, 1200), ('SI', 2200, 950), ('SK', 2300, 1900)
       ) AS r (country_code, standard_bp, reduced_bp)
 CROSS JOIN (VALUES ('standard'), ('reduced'), ('zero')) AS c (category);
