-- Audit trail of every exec and file operation. Append-only and written in
-- batches; it has no foreign key to sandboxes so that one bad row cannot
-- fail a batch and so that the trail outlives purged sandbox rows.

-- +goose Up
CREATE TABLE audit_events (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sandbox_id   TEXT NOT NULL,
    owner_id     TEXT NOT NULL,
    api_key_id   TEXT,
    event_type   TEXT NOT NULL,
    command      TEXT,
    path         TEXT,
    exit_code    INTEGER,
    duration_ms  BIGINT,
    stdout_bytes BIGINT,
    stderr_bytes BIGINT,
    bytes_in     BIGINT,
    bytes_out    BIGINT,
    error        TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idx_audit_sandbox ON audit_events (sandbox_id, id DESC);
CREATE INDEX idx_audit_owner ON audit_events (owner_id, id DESC);
CREATE INDEX idx_audit_created ON audit_events (created_at);

-- +goose Down
DROP TABLE audit_events;
