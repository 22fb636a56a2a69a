DROP TABLE webhook_attempts;
DROP TABLE webhook_redeliveries;
DROP TABLE webhook_endpoints;
DROP TABLE events;
