-- A miniature of payment's ledger: the guards (a CHECK constraint, an
-- append-only trigger) that the runtime role must not be able to remove.
CREATE TABLE ledger (
    id     bigserial PRIMARY KEY,
    amount bigint    NOT NULL,
    CONSTRAINT ledger_amount_positive CHECK (amount > 0)
);
CREATE FUNCTION ledger_forbid_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_append_only';
END
$$;
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_forbid_change();
