DROP TABLE first_table;
