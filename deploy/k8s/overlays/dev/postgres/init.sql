-- DEV ONLY: run once by the postgres image's docker-entrypoint.sh
-- (/docker-entrypoint-initdb.d) when the data volume is empty.
-- The passwords are throwaway dev values and must match the DATABASE_URLs in
-- ../secrets/*.env. Production databases are provisioned outside this repo
-- with the same layout (deploy/README.md, "Production database").
--
-- Layout: database `backroom`; per service a login role backroom_<svc> that
-- owns schema <svc> and has no rights on any other schema (mirrors
-- backroom_shared::db::provision_service).

CREATE DATABASE backroom;
REVOKE ALL ON DATABASE backroom FROM PUBLIC;

CREATE ROLE backroom_account   LOGIN PASSWORD 'dev-account-db-password';
CREATE ROLE backroom_inventory LOGIN PASSWORD 'dev-inventory-db-password';
CREATE ROLE backroom_payment   LOGIN PASSWORD 'dev-payment-db-password';

GRANT CONNECT ON DATABASE backroom TO backroom_account, backroom_inventory, backroom_payment;
ALTER ROLE backroom_account   IN DATABASE backroom SET search_path = account;
ALTER ROLE backroom_inventory IN DATABASE backroom SET search_path = inventory;
ALTER ROLE backroom_payment   IN DATABASE backroom SET search_path = payment;

\connect backroom

REVOKE ALL ON SCHEMA public FROM PUBLIC;

CREATE SCHEMA account AUTHORIZATION backroom_account;
REVOKE ALL ON SCHEMA account FROM PUBLIC;

CREATE SCHEMA inventory AUTHORIZATION backroom_inventory;
REVOKE ALL ON SCHEMA inventory FROM PUBLIC;

CREATE SCHEMA payment AUTHORIZATION backroom_payment;
REVOKE ALL ON SCHEMA payment FROM PUBLIC;
