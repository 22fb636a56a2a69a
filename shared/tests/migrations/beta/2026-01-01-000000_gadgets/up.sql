CREATE TABLE gadgets (id bigserial PRIMARY KEY);
