CREATE TABLE second_table (id integer);
