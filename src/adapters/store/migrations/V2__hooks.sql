-- Webhook deliveries: waiting, retrying, or failed for good (entry.failed).
CREATE TABLE hooks (
    seq bigserial PRIMARY KEY,
    entry jsonb NOT NULL
);
