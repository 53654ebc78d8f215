-- Outbox of usage events for Lago. Rows are written in the same transaction
-- as the state change they bill; a background sender delivers them with
-- retries. transaction_id is Lago's idempotency key.

-- +goose Up
CREATE TABLE usage_outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  TEXT NOT NULL UNIQUE,
    payload         JSONB NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at         TIMESTAMPTZ,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error      TEXT
);

CREATE INDEX idx_usage_outbox_due ON usage_outbox (next_attempt_at) WHERE sent_at IS NULL;

-- +goose Down
DROP TABLE usage_outbox;
