-- The stock movement log is append-only as a matter of privilege, not only
-- of its trigger. The runtime role backroom_inventory (what the service
-- serves as) got SELECT, INSERT, UPDATE and DELETE on every table of this
-- schema from the migrator's default privileges
-- (backroom_shared::db::provision_service); here it loses UPDATE and DELETE
-- on stock_movements, so even a compromised service can only read and
-- append. The trigger stays: it also stops the owner.
REVOKE UPDATE, DELETE, TRUNCATE ON stock_movements FROM backroom_inventory;
