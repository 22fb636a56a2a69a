DROP TABLE second_table;
