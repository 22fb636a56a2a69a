-- AIP-155 request ids: the first definitive outcome of a retried mutation.
-- Lives in each service's own schema (created by the shared migrations).
CREATE TABLE idempotency_keys (
    scope          text        NOT NULL, -- the calling principal (token sub) or 'anonymous'
    method         text        NOT NULL, -- the RPC, e.g. 'Register'
    request_id     uuid        NOT NULL,
    fingerprint    bytea       NOT NULL, -- sha256 of the request without secrets and request_id
    status_code    integer     NOT NULL DEFAULT -1, -- gRPC code of the stored outcome; -1 while the first call runs
    status_message text        NOT NULL DEFAULT '',
    status_details bytea       NOT NULL DEFAULT '',
    response       bytea       NOT NULL DEFAULT '', -- encoded response message when status_code = 0
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (scope, method, request_id)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
