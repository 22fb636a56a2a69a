DROP TABLE ledger_entries;
DROP TABLE journals;
DROP FUNCTION check_journal_balanced();
DROP FUNCTION forbid_ledger_change();
DROP TABLE ledger_accounts;
DROP TABLE refunds;
DROP TABLE payment_intents;
DROP TABLE payment_methods;
