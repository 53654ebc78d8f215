-- The egress policy a sandbox was created with (models.NetworkPolicy as
-- JSON); NULL means the default, allow all.

-- +goose Up
ALTER TABLE sandboxes ADD COLUMN network JSONB
    CHECK (network IS NULL OR jsonb_typeof(network) = 'object');

-- +goose Down
ALTER TABLE sandboxes DROP COLUMN network;
