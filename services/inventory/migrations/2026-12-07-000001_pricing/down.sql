DROP TABLE discount_redemptions;
DROP TABLE discount_codes;
DROP TABLE tax_rates;
ALTER TABLE products
    DROP CONSTRAINT products_other_prices,
    DROP COLUMN other_prices,
    DROP COLUMN other_currencies,
    DROP COLUMN tax_category;
