-- Accounts, their sessions (refresh-token families) and shipping addresses.
-- All timestamps come from the service's clock, so tests can move time.

CREATE TABLE accounts (
    id              uuid        PRIMARY KEY,            -- UUIDv7: creation order
    email           text        NOT NULL,
    display_name    text        NOT NULL,
    password_hash   text        NOT NULL,               -- Argon2id PHC string
    roles           text[]      NOT NULL,
    disabled        boolean     NOT NULL DEFAULT false,
    disable_reason  text        NOT NULL DEFAULT '',
    failed_logins   integer     NOT NULL DEFAULT 0,     -- failures in the current window
    first_failed_at timestamptz,                        -- start of that window
    locked_until    timestamptz,
    lock_count      integer     NOT NULL DEFAULT 0,     -- consecutive locks: the wait grows with it
    version         bigint      NOT NULL DEFAULT 1,     -- etag
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    CONSTRAINT accounts_email_key UNIQUE (email),
    CONSTRAINT accounts_email_normalised CHECK (email = lower(btrim(email))),
    CONSTRAINT accounts_failed_logins_nonnegative CHECK (failed_logins >= 0)
);

-- One row per refresh token ever issued. A family is every token descended
-- from one Login; presenting a rotated token revokes the whole family.
CREATE TABLE refresh_tokens (
    token_hash  bytea       PRIMARY KEY,               -- sha256 of the 256-bit token
    family_id   uuid        NOT NULL,
    account_id  uuid        NOT NULL REFERENCES accounts (id),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    rotated_at  timestamptz,                           -- set when exchanged for a successor
    revoked_at  timestamptz                            -- set on logout, reuse, password change, disable
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_account ON refresh_tokens (account_id);

CREATE TABLE addresses (
    id           uuid        PRIMARY KEY,              -- UUIDv7
    account_id   uuid        NOT NULL REFERENCES accounts (id),
    recipient    text        NOT NULL,
    line1        text        NOT NULL,
    line2        text        NOT NULL,
    city         text        NOT NULL,
    region       text        NOT NULL,
    postal_code  text        NOT NULL,
    country_code text        NOT NULL CHECK (country_code ~ '^[A-Z]{2}$'),
    created_at   timestamptz NOT NULL
);
CREATE INDEX addresses_account ON addresses (account_id, id);
