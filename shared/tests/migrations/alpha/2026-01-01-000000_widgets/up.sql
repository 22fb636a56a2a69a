CREATE TABLE widgets (id bigserial PRIMARY KEY, label text NOT NULL);
