GRANT UPDATE, DELETE ON journals, ledger_entries TO backroom_payment;
