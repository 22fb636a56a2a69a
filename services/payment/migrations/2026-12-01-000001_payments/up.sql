-- Payment methods, payment intents, refunds and the double-entry ledger.
-- No column ever holds a card number or CVC: a payment method keeps brand,
-- last4, expiry, a keyed fingerprint and the processor's opaque token.
-- All timestamps come from the service's clock, so tests can move time.

CREATE TABLE payment_methods (
    id              uuid        PRIMARY KEY,              -- UUIDv7: creation order
    customer_id     uuid        NOT NULL,                 -- account id (account schema; no cross-schema FK)
    brand           text        NOT NULL CHECK (brand IN ('visa','mastercard','amex','discover','diners','jcb','unionpay','other')),
    last4           text        NOT NULL CHECK (last4 ~ '^[0-9]{4}$'),
    exp_month       integer     NOT NULL CHECK (exp_month BETWEEN 1 AND 12),
    exp_year        integer     NOT NULL CHECK (exp_year BETWEEN 2000 AND 9999),
    fingerprint     text        NOT NULL CHECK (fingerprint ~ '^[0-9a-f]{64}$'), -- HMAC-SHA256(key, PAN), hex
    holder_name     text        NOT NULL,
    processor_token text        NOT NULL,                 -- the processor's vault reference
    created_at      timestamptz NOT NULL,
    detached_at     timestamptz
);
CREATE INDEX payment_methods_customer ON payment_methods (customer_id, id) WHERE detached_at IS NULL;

CREATE TABLE payment_intents (
    id                        uuid        PRIMARY KEY,    -- UUIDv7
    customer_id               uuid        NOT NULL,
    currency                  text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount                    bigint      NOT NULL CHECK (amount BETWEEN 1 AND 99999999),
    amount_authorized         bigint      NOT NULL DEFAULT 0,
    amount_capturable         bigint      NOT NULL DEFAULT 0,
    amount_received           bigint      NOT NULL DEFAULT 0,
    amount_refunded           bigint      NOT NULL DEFAULT 0,
    status                    text        NOT NULL CHECK (status IN ('requires_payment_method','requires_confirmation','processing','requires_capture','succeeded','canceled')),
    capture_method            text        NOT NULL CHECK (capture_method IN ('automatic','manual')),
    payment_method_id         uuid        REFERENCES payment_methods (id),
    description               text        NOT NULL,
    metadata                  text        NOT NULL CHECK (jsonb_typeof(metadata::jsonb) = 'object'), -- JSON object of strings
    last_error_code           text,
    last_error_decline_code   text,
    last_error_message        text,
    last_error_payment_method uuid,
    cancellation_reason       text,
    authorization_id          text,                       -- the processor's authorization
    authorization_expires_at  timestamptz,
    authorization_attempt     integer     NOT NULL DEFAULT 0, -- generation of the processor idempotency key
    created_at                timestamptz NOT NULL,
    updated_at                timestamptz NOT NULL,
    -- Backstops for the invariants the code keeps.
    CONSTRAINT payment_intents_amounts_nonnegative CHECK (amount_authorized >= 0 AND amount_capturable >= 0 AND amount_received >= 0 AND amount_refunded >= 0),
    CONSTRAINT payment_intents_authorized_le_amount CHECK (amount_authorized <= amount),
    CONSTRAINT payment_intents_held_le_authorized CHECK (amount_capturable + amount_received <= amount_authorized),
    CONSTRAINT payment_intents_refunded_le_received CHECK (amount_refunded <= amount_received),
    CONSTRAINT payment_intents_capturable_only_requires_capture CHECK (amount_capturable = 0 OR status = 'requires_capture'),
    CONSTRAINT payment_intents_expiry_only_requires_capture CHECK ((authorization_expires_at IS NULL) = (status <> 'requires_capture'))
);
CREATE INDEX payment_intents_customer ON payment_intents (customer_id, id);
CREATE INDEX payment_intents_status ON payment_intents (status, id);
CREATE INDEX payment_intents_authorization_expiry ON payment_intents (authorization_expires_at) WHERE status = 'requires_capture';

CREATE TABLE refunds (
    id                  uuid        PRIMARY KEY,          -- UUIDv7
    payment_intent_id   uuid        NOT NULL REFERENCES payment_intents (id),
    currency            text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount              bigint      NOT NULL CHECK (amount > 0),
    status              text        NOT NULL CHECK (status IN ('succeeded','failed')),
    reason              text        NOT NULL CHECK (reason IN ('unspecified','requested_by_customer','duplicate','fraudulent')),
    processor_refund_id text        NOT NULL,
    created_at          timestamptz NOT NULL
);
CREATE INDEX refunds_intent ON refunds (payment_intent_id, id);

-- The fixed chart of accounts (see the proto).
CREATE TABLE ledger_accounts (
    code         text PRIMARY KEY,
    display_name text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('asset','liability','equity','revenue','expense'))
);
INSERT INTO ledger_accounts (code, display_name, kind) VALUES
    ('authorization_holds', 'Authorization holds', 'asset'),
    ('customer_funds', 'Customer funds under hold', 'liability'),
    ('merchant_revenue', 'Merchant revenue', 'revenue'),
    ('processor_clearing', 'Processor clearing', 'asset');

CREATE TABLE journals (
    id                uuid        PRIMARY KEY,            -- UUIDv7: posting order
    payment_intent_id uuid        NOT NULL REFERENCES payment_intents (id),
    kind              text        NOT NULL CHECK (kind IN ('authorization_hold','capture','release','refund')),
    refund_id         uuid        REFERENCES refunds (id),
    created_at        timestamptz NOT NULL,
    CONSTRAINT journals_refund_only_for_refunds CHECK ((refund_id IS NOT NULL) = (kind = 'refund'))
);
CREATE INDEX journals_intent ON journals (payment_intent_id, id);
CREATE INDEX journals_kind ON journals (kind, id);

CREATE TABLE ledger_entries (
    id             bigserial   PRIMARY KEY,               -- posting order
    journal_id     uuid        NOT NULL REFERENCES journals (id),
    ledger_account text        NOT NULL REFERENCES ledger_accounts (code),
    direction      text        NOT NULL CHECK (direction IN ('debit','credit')),
    currency       text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    amount         bigint      NOT NULL CHECK (amount > 0),
    created_at     timestamptz NOT NULL
);
CREATE INDEX ledger_entries_journal ON ledger_entries (journal_id);
CREATE INDEX ledger_entries_account ON ledger_entries (ledger_account, id);

-- DB-level guard: at commit, every journal touched by the transaction has at
-- least two entries and balances per currency (Σ debits = Σ credits).
CREATE FUNCTION check_journal_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    target uuid;
    entry_count integer;
    unbalanced integer;
BEGIN
    IF TG_TABLE_NAME = 'journals' THEN
        target := NEW.id;
    ELSE
        target := NEW.journal_id;
    END IF;
    SELECT count(*) INTO entry_count FROM ledger_entries WHERE journal_id = target;
    IF entry_count < 2 THEN
        RAISE EXCEPTION 'journal % has % entries, needs at least 2', target, entry_count
            USING ERRCODE = 'check_violation', CONSTRAINT = 'journals_balanced';
    END IF;
    SELECT count(*) INTO unbalanced FROM (
        SELECT currency
        FROM ledger_entries WHERE journal_id = target
        GROUP BY currency
        HAVING sum(CASE direction WHEN 'debit' THEN amount ELSE -amount END) <> 0
    ) AS off;
    IF unbalanced > 0 THEN
        RAISE EXCEPTION 'journal % does not balance', target
            USING ERRCODE = 'check_violation', CONSTRAINT = 'journals_balanced';
    END IF;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER journals_balanced AFTER INSERT ON journals
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION check_journal_balanced();
CREATE CONSTRAINT TRIGGER ledger_entries_balanced AFTER INSERT ON ledger_entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION check_journal_balanced();

-- The ledger is append-only.
CREATE FUNCTION forbid_ledger_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_append_only';
END
$$;
CREATE TRIGGER journals_append_only BEFORE UPDATE OR DELETE ON journals
    FOR EACH ROW EXECUTE FUNCTION forbid_ledger_change();
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION forbid_ledger_change();
