-- The transactional outbox of domain events (backroom_shared::events), in
-- each service's own schema. A change and its event row are written in one
-- transaction; `position` orders the rows as they were inserted (gaps where a
-- transaction rolled back), and the sequencer gives every committed row its
-- gap-free `sequence` in commit order (NULL until then).
CREATE TABLE events (
    position     bigserial   PRIMARY KEY,
    sequence     bigint      UNIQUE,
    id           uuid        NOT NULL UNIQUE,
    type         text        NOT NULL,  -- the payload's full protobuf name
    subject      text        NOT NULL,  -- resource name
    occurred_at  timestamptz NOT NULL,
    traceparent  text        NOT NULL DEFAULT '',
    payload      bytea       NOT NULL,  -- the encoded payload message
    published_at timestamptz,           -- JetStream acknowledged it (relay)
    CHECK (sequence IS NULL OR sequence > 0)
);
CREATE INDEX events_unsequenced ON events (position) WHERE sequence IS NULL;
CREATE INDEX events_unpublished ON events (sequence) WHERE published_at IS NULL AND sequence IS NOT NULL;
CREATE INDEX events_by_type ON events (type, sequence);

-- Webhook endpoints: each delivers the events after `delivered_sequence`,
-- one at a time, in sequence order.
CREATE TABLE webhook_endpoints (
    id                 uuid        PRIMARY KEY,
    url                text        NOT NULL,
    event_types        text[]      NOT NULL DEFAULT '{}',
    secret             text        NOT NULL,
    delivered_sequence bigint      NOT NULL,
    abandoned_count    bigint      NOT NULL DEFAULT 0,
    -- The event being delivered: its first failure, and when to try again.
    failing_since      timestamptz,
    next_attempt_at    timestamptz,
    created_at         timestamptz NOT NULL
);

-- Redeliveries asked for by RPC: delivered before the endpoint's next event
-- (after the event being retried, if one is). A failing redelivery keeps its
-- own retry state, so the endpoint's columns always describe its next event.
CREATE TABLE webhook_redeliveries (
    endpoint_id     uuid        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    sequence        bigint      NOT NULL,
    requested_at    timestamptz NOT NULL,
    failing_since   timestamptz,
    next_attempt_at timestamptz,
    PRIMARY KEY (endpoint_id, sequence)
);

-- Every delivery attempt.
CREATE TABLE webhook_attempts (
    endpoint_id uuid        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    attempt     bigserial   NOT NULL,
    sequence    bigint      NOT NULL,
    event_id    uuid        NOT NULL,
    http_status integer     NOT NULL,
    error       text        NOT NULL DEFAULT '',
    latency_ms  bigint      NOT NULL,
    attempted_at timestamptz NOT NULL,
    PRIMARY KEY (endpoint_id, attempt)
);
