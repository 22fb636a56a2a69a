DROP INDEX refresh_tokens_expires;
ALTER TABLE refresh_tokens DROP COLUMN session_expires_at;
DROP TABLE login_throttles;
ALTER TABLE accounts
    ADD COLUMN failed_logins   integer NOT NULL DEFAULT 0,
    ADD COLUMN first_failed_at timestamptz,
    ADD COLUMN locked_until    timestamptz,
    ADD COLUMN lock_count      integer NOT NULL DEFAULT 0,
    ADD CONSTRAINT accounts_failed_logins_nonnegative CHECK (failed_logins >= 0);
DROP INDEX accounts_security_changed;
ALTER TABLE accounts
    DROP CONSTRAINT accounts_security_version_positive,
    DROP COLUMN security_changed_at,
    DROP COLUMN security_version;
