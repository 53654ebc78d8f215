-- An operation in progress on a sandbox (pause, resume, hibernate...): the
-- control plane takes this lease before it asks the agent and clears it
-- with the status change, so two of them (two API calls, or one and the
-- lifecycle manager) never interleave. op_until bounds a lease whose
-- holder died.

-- +goose Up
ALTER TABLE sandboxes ADD COLUMN op TEXT, ADD COLUMN op_until TIMESTAMPTZ;

-- +goose Down
ALTER TABLE sandboxes DROP COLUMN op, DROP COLUMN op_until;
