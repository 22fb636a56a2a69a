DROP TABLE ledger;
DROP FUNCTION ledger_forbid_change();
