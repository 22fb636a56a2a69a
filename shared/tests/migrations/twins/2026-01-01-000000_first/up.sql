CREATE TABLE first_table (id integer);
