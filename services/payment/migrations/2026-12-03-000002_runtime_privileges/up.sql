-- The ledger is append-only as a matter of privilege, not only of triggers.
-- The runtime role backroom_payment (what the service serves as) got
-- SELECT, INSERT, UPDATE and DELETE on every table of this schema from the
-- migrator's default privileges (backroom_shared::db::provision_service);
-- here it loses UPDATE and DELETE on journals and ledger entries, so even a
-- compromised service can only read and append. The append-only triggers
-- stay: they also stop the owner, and only the owner could drop them.
REVOKE UPDATE, DELETE, TRUNCATE ON journals, ledger_entries FROM backroom_payment;
