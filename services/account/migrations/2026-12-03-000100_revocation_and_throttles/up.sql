-- Security versions (token revocation), failed-login throttles per email and
-- client, and an absolute session lifetime.

-- Raised by a password change, a disable and a role change: every access
-- token carries the version it was issued under (claim `sv`), and one below
-- the current version no longer counts (ListTokenRevocations).
ALTER TABLE accounts
    ADD COLUMN security_version    bigint      NOT NULL DEFAULT 1,
    ADD COLUMN security_changed_at timestamptz,
    ADD CONSTRAINT accounts_security_version_positive CHECK (security_version >= 1);
CREATE INDEX accounts_security_changed ON accounts (security_changed_at)
    WHERE security_changed_at IS NOT NULL;

-- The per-account lockout counters move to login_throttles.
ALTER TABLE accounts
    DROP CONSTRAINT accounts_failed_logins_nonnegative,
    DROP COLUMN failed_logins,
    DROP COLUMN first_failed_at,
    DROP COLUMN locked_until,
    DROP COLUMN lock_count;

-- Failed-login counters, keyed by the email (its SHA-256, so unknown emails
-- are throttled exactly like known ones and no typed-in address is stored)
-- and the client address; client '*' is the ceiling across all clients.
-- Attempts are counted BEFORE the password is checked, so concurrent guesses
-- cannot all pass the limit.
CREATE TABLE login_throttles (
    email_hash   bytea       NOT NULL CHECK (length(email_hash) = 32),
    client       text        NOT NULL,
    attempts     integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0), -- in the current window
    window_start timestamptz,                                           -- start of that window
    locked_until timestamptz,
    lock_count   integer     NOT NULL DEFAULT 0 CHECK (lock_count >= 0), -- consecutive locks: the wait grows with it
    updated_at   timestamptz NOT NULL,
    -- The client's last successful login for this email: for a while after
    -- it, the client is not bound by the ceiling lock (an attacker spread
    -- over many addresses cannot lock the owner out of a known client).
    last_success_at timestamptz,
    CHECK (client <> '*' OR last_success_at IS NULL),
    PRIMARY KEY (email_hash, client)
);
CREATE INDEX login_throttles_updated ON login_throttles (updated_at);

-- A refresh never carries a session past its absolute end.
ALTER TABLE refresh_tokens ADD COLUMN session_expires_at timestamptz;
UPDATE refresh_tokens SET session_expires_at = expires_at;
ALTER TABLE refresh_tokens ALTER COLUMN session_expires_at SET NOT NULL;
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);
