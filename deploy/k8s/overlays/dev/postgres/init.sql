-- DEV ONLY: run once by the postgres image's docker-entrypoint.sh
-- (/docker-entrypoint-initdb.d) when the data volume is empty.
-- The passwords are throwaway dev values and must match the URLs in
-- ../secrets/*.env. Production databases are provisioned outside this repo
-- with the same layout (deploy/README.md, "Database roles").
--
-- Layout (mirrors backroom_shared::db::provision_service): database
-- `backroom`; per service <svc>
--   - backroom_<svc>_migrator owns schema <svc> and runs its migrations
--     (BACKROOM_MIGRATION_DATABASE_URL: the migrate initContainer and Job);
--   - backroom_<svc> serves (DATABASE_URL): USAGE on the schema and, through
--     the migrator's default privileges, SELECT/INSERT/UPDATE/DELETE on its
--     tables, USAGE/SELECT on its sequences, EXECUTE on its functions. It owns
--     nothing, so it cannot ALTER, DROP, TRUNCATE, create objects or disable
--     triggers; migrations narrow it further (payment's ledger, inventory's
--     movement log: INSERT and SELECT only).
-- No role has any right on another service's schema; PUBLIC has none.

CREATE DATABASE backroom;
REVOKE ALL ON DATABASE backroom FROM PUBLIC;

CREATE ROLE backroom_account_migrator   LOGIN PASSWORD 'dev-account-migrator-db-password';
CREATE ROLE backroom_inventory_migrator LOGIN PASSWORD 'dev-inventory-migrator-db-password';
CREATE ROLE backroom_payment_migrator   LOGIN PASSWORD 'dev-payment-migrator-db-password';
CREATE ROLE backroom_account            LOGIN PASSWORD 'dev-account-db-password';
CREATE ROLE backroom_inventory          LOGIN PASSWORD 'dev-inventory-db-password';
CREATE ROLE backroom_payment            LOGIN PASSWORD 'dev-payment-db-password';

GRANT CONNECT ON DATABASE backroom TO
    backroom_account_migrator, backroom_inventory_migrator, backroom_payment_migrator,
    backroom_account, backroom_inventory, backroom_payment;
ALTER ROLE backroom_account_migrator   IN DATABASE backroom SET search_path = account;
ALTER ROLE backroom_inventory_migrator IN DATABASE backroom SET search_path = inventory;
ALTER ROLE backroom_payment_migrator   IN DATABASE backroom SET search_path = payment;
ALTER ROLE backroom_account            IN DATABASE backroom SET search_path = account;
ALTER ROLE backroom_inventory          IN DATABASE backroom SET search_path = inventory;
ALTER ROLE backroom_payment            IN DATABASE backroom SET search_path = payment;

\connect backroom

REVOKE ALL ON SCHEMA public FROM PUBLIC;

CREATE SCHEMA account AUTHORIZATION backroom_account_migrator;
REVOKE ALL ON SCHEMA account FROM PUBLIC;
GRANT USAGE ON SCHEMA account TO backroom_account;
ALTER DEFAULT PRIVILEGES FOR ROLE backroom_account_migrator IN SCHEMA account
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO backroom_account;
ALTER DEFAULT PRIVILEGES FOR ROLE backroom_account_migrator IN SCHEMA account
    GRANT USAGE, SELECT ON SEQUENCES TO backroom_account;
ALTER DEFAULT PRIVILEGES FOR ROLE backroom_account_migrator
    REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE backroom_account_migrator IN SCHEMA account
    GRANT EXECUTE ON FUNCTIONS TO backroom_account;

CREATE SCHEMA inventory AUTHORIZATION backroom_inventory_migrator;
REVOKE ALL ON SCHEMA inventory FROM PUBLIC;
GRANT USAGE ON SCHEMA inventory TO backroom_inventory;
ALTER DEFAULT PRIVILEGES FOR ROLE backroom_inventory_migrator IN SCHEMA inventory
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO backroom_inventory;
ALTER DEFAULT PRIVILEGES FOR ROLE backroom_inventory_migrator IN SCHEMA inventory
    GRANT USAGE, SELECT ON SEQUENCES TO backroom_inventory;
ALTER DEFAULT PRIVILEGES FOR ROLE backroom_inventory_migrator
    REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE backroom_inventory_migrator IN SCHEMA inventory
    GRANT EXECUTE ON FUNCTIONS TO backroom_inventory;

CREATE SCHEMA payment AUTHORIZATION backroom_payment_migrator;
REVOKE ALL ON SCHEMA payment FROM PUBLIC;
GRANT USAGE ON SCHEMA payment TO backroom_payment;
ALTER DEFAULT PRIVILEGES FOR ROLE backroom_payment_migrator IN SCHEMA payment
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO backroom_payment;
ALTER DEFAULT PRIVILEGES FOR ROLE backroom_payment_migrator IN SCHEMA payment
    GRANT USAGE, SELECT ON SEQUENCES TO backroom_payment;
ALTER DEFAULT PRIVILEGES FOR ROLE backroom_payment_migrator
    REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE backroom_payment_migrator IN SCHEMA payment
    GRANT EXECUTE ON FUNCTIONS TO backroom_payment;
