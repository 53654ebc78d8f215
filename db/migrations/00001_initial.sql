-- Core control-plane tables: API keys (owners, admin flag, pool quota and
-- rate limits), host agents, sandboxes and the per-sandbox pool
-- reservations that make quota accounting exact.

-- +goose Up

-- api_keys: one row per key. Only the SHA-256 of the key is stored.
-- Pool quota lives on the key: pool_* are the limits, used_* the sum of the
-- live reservations in pool_reservations. A create reserves with one
-- conditional UPDATE (used + x <= pool), so concurrent creates serialise on
-- the key's row and can never overcommit.
CREATE TABLE api_keys (
    id                 TEXT PRIMARY KEY,
    key_hash           TEXT NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    key_prefix         TEXT NOT NULL DEFAULT '',
    name               TEXT NOT NULL DEFAULT '',
    owner_id           TEXT NOT NULL CHECK (owner_id <> ''),
    is_admin           BOOLEAN NOT NULL DEFAULT false,
    plan               TEXT NOT NULL DEFAULT 'hobby',
    pool_vcpus         INTEGER NOT NULL DEFAULT 2 CHECK (pool_vcpus >= 0),
    pool_memory_mb     INTEGER NOT NULL DEFAULT 8192 CHECK (pool_memory_mb >= 0),
    pool_storage_mb    INTEGER NOT NULL DEFAULT 20480 CHECK (pool_storage_mb >= 0),
    used_vcpus         INTEGER NOT NULL DEFAULT 0 CHECK (used_vcpus >= 0),
    used_memory_mb     INTEGER NOT NULL DEFAULT 0 CHECK (used_memory_mb >= 0),
    used_storage_mb    INTEGER NOT NULL DEFAULT 0 CHECK (used_storage_mb >= 0),
    -- NULL: the control plane's default limit.
    rate_limit_per_sec DOUBLE PRECISION CHECK (rate_limit_per_sec IS NULL OR rate_limit_per_sec > 0),
    rate_limit_burst   INTEGER CHECK (rate_limit_burst IS NULL OR rate_limit_burst > 0),
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at       TIMESTAMPTZ,
    revoked_at         TIMESTAMPTZ
);

CREATE INDEX idx_api_keys_owner ON api_keys (owner_id, created_at);

-- hosts: registered host agents. total_* and used_* are what the agent
-- reports in its heartbeats.
CREATE TABLE hosts (
    id                TEXT PRIMARY KEY,
    grpc_endpoint     TEXT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'healthy'
                      CHECK (status IN ('healthy', 'unhealthy', 'draining', 'gone')),
    agent_version     TEXT NOT NULL DEFAULT '',
    driver            TEXT NOT NULL DEFAULT '',
    total_vcpus       INTEGER NOT NULL DEFAULT 0 CHECK (total_vcpus >= 0),
    total_memory_mb   BIGINT NOT NULL DEFAULT 0 CHECK (total_memory_mb >= 0),
    total_disk_mb     BIGINT NOT NULL DEFAULT 0 CHECK (total_disk_mb >= 0),
    used_vcpus        INTEGER NOT NULL DEFAULT 0,
    used_memory_mb    BIGINT NOT NULL DEFAULT 0,
    used_disk_mb      BIGINT NOT NULL DEFAULT 0,
    sandbox_count     INTEGER NOT NULL DEFAULT 0,
    registered_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_heartbeat    TIMESTAMPTZ,
    status_changed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idx_hosts_status_heartbeat ON hosts (status, last_heartbeat);

-- sandboxes: every sandbox ever created. Rows are kept after destroy
-- (status 'stopped') for audit and billing. Secrets (envs, the envd access
-- token) are never stored; envd_token_hash is the token's SHA-256 hex.
CREATE TABLE sandboxes (
    id                 TEXT PRIMARY KEY,
    owner_id           TEXT NOT NULL CHECK (owner_id <> ''),
    api_key_id         TEXT NOT NULL REFERENCES api_keys (id),
    host_id            TEXT REFERENCES hosts (id),
    template           TEXT NOT NULL CHECK (template <> ''),
    status             TEXT NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'starting', 'running', 'paused',
                                         'hibernated', 'stopped', 'error')),
    vcpus              INTEGER NOT NULL DEFAULT 1 CHECK (vcpus > 0),
    memory_mb          INTEGER NOT NULL DEFAULT 512 CHECK (memory_mb > 0),
    disk_mb            INTEGER NOT NULL DEFAULT 0 CHECK (disk_mb >= 0),
    timeout_sec        INTEGER NOT NULL DEFAULT 300 CHECK (timeout_sec >= 0),
    guest_ip           TEXT,
    vsock_cid          INTEGER,
    snapshot_path      TEXT,
    hibernate_location TEXT,
    envd_token_hash    TEXT CHECK (envd_token_hash IS NULL OR envd_token_hash ~ '^[0-9a-f]{64}$'),
    error_reason       TEXT,
    metadata           JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at         TIMESTAMPTZ,
    paused_at          TIMESTAMPTZ,
    stopped_at         TIMESTAMPTZ,
    last_active_at     TIMESTAMPTZ
);

-- Listing is keyset-paginated on (created_at DESC, id DESC), per owner or
-- (admin) across owners, optionally narrowed by status or template.
CREATE INDEX idx_sandboxes_owner ON sandboxes (owner_id, created_at DESC, id DESC);
CREATE INDEX idx_sandboxes_owner_status ON sandboxes (owner_id, status, created_at DESC, id DESC);
CREATE INDEX idx_sandboxes_owner_template ON sandboxes (owner_id, template, created_at DESC, id DESC);
CREATE INDEX idx_sandboxes_created ON sandboxes (created_at DESC, id DESC);
CREATE INDEX idx_sandboxes_status ON sandboxes (status, created_at DESC, id DESC);
CREATE INDEX idx_sandboxes_host ON sandboxes (host_id);
CREATE INDEX idx_sandboxes_metadata ON sandboxes USING GIN (metadata jsonb_path_ops);

-- pool_reservations: what each live sandbox holds of its key's pool. The
-- row exists from create until release; release deletes it and gives the
-- amounts back in the same transaction, so it happens exactly once.
-- Invariant: api_keys.used_* = SUM(pool_reservations.*) per key.
CREATE TABLE pool_reservations (
    sandbox_id  TEXT PRIMARY KEY REFERENCES sandboxes (id) ON DELETE RESTRICT,
    api_key_id  TEXT NOT NULL REFERENCES api_keys (id),
    vcpus       INTEGER NOT NULL CHECK (vcpus >= 0),
    memory_mb   INTEGER NOT NULL CHECK (memory_mb >= 0),
    storage_mb  INTEGER NOT NULL CHECK (storage_mb >= 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idx_pool_reservations_key ON pool_reservations (api_key_id);

-- +goose Down
DROP TABLE pool_reservations;
DROP TABLE sandboxes;
DROP TABLE hosts;
DROP TABLE api_keys;
