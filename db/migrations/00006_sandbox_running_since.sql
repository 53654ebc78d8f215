-- When the sandbox's current run began (NULL unless running): the usage
-- event written when the run ends bills the time since.

-- +goose Up
ALTER TABLE sandboxes ADD COLUMN running_since TIMESTAMPTZ;
-- Runs in progress are billed from the upgrade on.
UPDATE sandboxes SET running_since = now() WHERE status = 'running';

-- +goose Down
ALTER TABLE sandboxes DROP COLUMN running_since;
