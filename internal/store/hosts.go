package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
)

// HostGone is the status of a host that stayed unhealthy past the grace
// period: its sandboxes are failed and it gets nothing until it
// registers or heartbeats again.
const HostGone models.HostStatus = "gone"

// Host is a host row: the shared model plus what the control plane has
// allocated on it (sandboxes scheduled there that hold a VM: pending with
// this host, starting, running, paused).
type Host struct {
	models.Host
	Allocated          models.Resources `json:"allocated"`
	AllocatedSandboxes int              `json:"allocated_sandboxes"`
	RegisteredAt       time.Time        `json:"registered_at"`
	StatusChangedAt    time.Time        `json:"status_changed_at"`
}

// HostRegistration is what an agent says when it (re)connects.
type HostRegistration struct {
	ID           string
	GRPCEndpoint string
	AgentVersion string
	Driver       string
	Capacity     models.Capacity
}

// hostSelect joins each host with what is allocated on it.
const hostSelect = `
	SELECT h.id, h.grpc_endpoint, h.status, h.agent_version, h.driver,
	       h.total_vcpus, h.used_vcpus, h.total_memory_mb, h.used_memory_mb,
	       h.total_disk_mb, h.used_disk_mb, h.sandbox_count, h.last_heartbeat,
	       coalesce(a.vcpus, 0), coalesce(a.memory_mb, 0), coalesce(a.disk_mb, 0), coalesce(a.n, 0),
	       h.registered_at, h.status_changed_at
	  FROM hosts h
	  LEFT JOIN (SELECT host_id, sum(vcpus)::int AS vcpus, sum(memory_mb)::int AS memory_mb,
	                    sum(disk_mb)::int AS disk_mb, count(*)::int AS n
	               FROM sandboxes
	              WHERE host_id IS NOT NULL AND status IN ('pending', 'starting', 'running', 'paused')
	              GROUP BY host_id) a ON a.host_id = h.id`

func scanHost(row pgx.Row) (Host, error) {
	var h Host
	var hb *time.Time
	c := &h.Capacity
	err := row.Scan(&h.ID, &h.GRPCEndpoint, &h.Status, &h.AgentVersion, &h.Driver,
		&c.TotalVCPUs, &c.UsedVCPUs, &c.TotalMemoryMB, &c.UsedMemoryMB,
		&c.TotalDiskMB, &c.UsedDiskMB, &c.SandboxCount, &hb,
		&h.Allocated.VCPUs, &h.Allocated.MemoryMB, &h.Allocated.DiskMB, &h.AllocatedSandboxes,
		&h.RegisteredAt, &h.StatusChangedAt)
	h.LastHeartbeat = deref(hb)
	return h, err
}

func collectHosts(rows pgx.Rows, err error) ([]Host, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Host, error) { return scanHost(r) })
}

// UpsertHost registers a host or refreshes its registration. It counts as
// a heartbeat: an unhealthy or gone host becomes healthy; a draining one
// stays draining.
func (s *Store) UpsertHost(ctx context.Context, r HostRegistration) (Host, error) {
	if r.ID == "" || r.GRPCEndpoint == "" {
		return Host{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "register host: id and grpc endpoint are required")
	}
	c := r.Capacity
	_, err := s.pool.Exec(ctx, `
		INSERT INTO hosts (id, grpc_endpoint, agent_version, driver,
		                   total_vcpus, used_vcpus, total_memory_mb, used_memory_mb,
		                   total_disk_mb, used_disk_mb, sandbox_count, last_heartbeat)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())
		ON CONFLICT (id) DO UPDATE SET
		       grpc_endpoint = excluded.grpc_endpoint, agent_version = excluded.agent_version,
		       driver = excluded.driver,
		       total_vcpus = excluded.total_vcpus, used_vcpus = excluded.used_vcpus,
		       total_memory_mb = excluded.total_memory_mb, used_memory_mb = excluded.used_memory_mb,
		       total_disk_mb = excluded.total_disk_mb, used_disk_mb = excluded.used_disk_mb,
		       sandbox_count = excluded.sandbox_count, last_heartbeat = now(),
		       status = CASE WHEN hosts.status = 'draining' THEN 'draining' ELSE 'healthy' END,
		       status_changed_at = CASE WHEN hosts.status IN ('unhealthy', 'gone') THEN now()
		                                ELSE hosts.status_changed_at END`,
		r.ID, r.GRPCEndpoint, r.AgentVersion, r.Driver,
		c.TotalVCPUs, c.UsedVCPUs, c.TotalMemoryMB, c.UsedMemoryMB, c.TotalDiskMB, c.UsedDiskMB, c.SandboxCount)
	if err != nil {
		return Host{}, dbErr("register host "+r.ID, err)
	}
	return s.GetHost(ctx, r.ID)
}

// Heartbeat records a heartbeat with the agent's current capacity. An
// unknown host is errdefs.ErrNotFound (the agent must register first).
func (s *Store) Heartbeat(ctx context.Context, hostID string, c models.Capacity) (Host, error) {
	tag, err := s.pool.Exec(ctx, `
		UPDATE hosts SET last_heartbeat = now(),
		       total_vcpus = $2, used_vcpus = $3, total_memory_mb = $4, used_memory_mb = $5,
		       total_disk_mb = $6, used_disk_mb = $7, sandbox_count = $8,
		       status = CASE WHEN status IN ('unhealthy', 'gone') THEN 'healthy' ELSE status END,
		       status_changed_at = CASE WHEN status IN ('unhealthy', 'gone') THEN now() ELSE status_changed_at END
		 WHERE id = $1`,
		hostID, c.TotalVCPUs, c.UsedVCPUs, c.TotalMemoryMB, c.UsedMemoryMB, c.TotalDiskMB, c.UsedDiskMB, c.SandboxCount)
	if err != nil {
		return Host{}, dbErr("heartbeat "+hostID, err)
	}
	if tag.RowsAffected() == 0 {
		return Host{}, errdefs.Errorf(errdefs.ErrNotFound, "heartbeat: host %s", hostID)
	}
	return s.GetHost(ctx, hostID)
}

// GetHost returns one host.
func (s *Store) GetHost(ctx context.Context, id string) (Host, error) {
	h, err := scanHost(s.pool.QueryRow(ctx, hostSelect+` WHERE h.id = $1`, id))
	if err != nil {
		return Host{}, dbErr("get host "+id, err)
	}
	return h, nil
}

// ListHosts returns every host, by ID.
func (s *Store) ListHosts(ctx context.Context) ([]Host, error) {
	hosts, err := collectHosts(s.pool.Query(ctx, hostSelect+` ORDER BY h.id`))
	if err != nil {
		return nil, dbErr("list hosts", err)
	}
	return hosts, nil
}

// SetHostStatus sets a host's status by hand (drain, undrain).
func (s *Store) SetHostStatus(ctx context.Context, id string, st models.HostStatus) error {
	tag, err := s.pool.Exec(ctx, `
		UPDATE hosts SET status = $2,
		       status_changed_at = CASE WHEN status = $2 THEN status_changed_at ELSE now() END
		 WHERE id = $1`, id, string(st))
	if err != nil {
		return dbErr("set host status "+id, err)
	}
	if tag.RowsAffected() == 0 {
		return errdefs.Errorf(errdefs.ErrNotFound, "host %s", id)
	}
	return nil
}

// MarkStaleHosts marks unhealthy every healthy or draining host whose
// last heartbeat is older than olderThan, and returns their IDs.
func (s *Store) MarkStaleHosts(ctx context.Context, olderThan time.Duration) ([]string, error) {
	return s.collectIDs(ctx, "mark stale hosts", `
		UPDATE hosts SET status = 'unhealthy', status_changed_at = now()
		 WHERE status IN ('healthy', 'draining')
		   AND coalesce(last_heartbeat, registered_at) < now() - $1::bigint * interval '1 microsecond'
		RETURNING id`, olderThan.Microseconds())
}

// GoneHost is a host MarkGoneHosts declared gone, with the sandboxes it
// moved to error.
type GoneHost struct {
	ID        string
	Sandboxes []string
}

// MarkGoneHosts marks gone every host unhealthy for longer than
// unhealthyFor and, in the same transaction, moves every sandbox on it
// that is not stopped or in error to error ("host X stopped answering"),
// releasing their reservations: a crash in between cannot leave sandboxes
// on a gone host. It returns what it did.
func (s *Store) MarkGoneHosts(ctx context.Context, unhealthyFor time.Duration) ([]GoneHost, error) {
	var out []GoneHost
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `
			UPDATE hosts SET status = 'gone', status_changed_at = now()
			 WHERE status = 'unhealthy'
			   AND status_changed_at < now() - $1::bigint * interval '1 microsecond'
			RETURNING id`, unhealthyFor.Microseconds())
		if err != nil {
			return dbErr("mark gone hosts", err)
		}
		hosts, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return dbErr("mark gone hosts", err)
		}
		for _, h := range hosts {
			ids, err := s.failHostSandboxes(ctx, tx, h, fmt.Sprintf("host %s stopped answering", h))
			if err != nil {
				return err
			}
			out = append(out, GoneHost{ID: h, Sandboxes: ids})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// FailHostSandboxes moves every sandbox on host that is not stopped or in
// error to error with reason, releasing their reservations, in one
// transaction; it returns their IDs.
func (s *Store) FailHostSandboxes(ctx context.Context, hostID, reason string) ([]string, error) {
	var ids []string
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		ids, err = s.failHostSandboxes(ctx, tx, hostID, reason)
		return err
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

func (s *Store) failHostSandboxes(ctx context.Context, tx pgx.Tx, hostID, reason string) ([]string, error) {
	// The runs that end here are billed up to the host's last
	// heartbeat: nothing is known to have run after it.
	rows, err := tx.Query(ctx, `
		UPDATE sandboxes SET status = 'error', error_reason = $2, updated_at = now(),
		       running_since = NULL, op = NULL, op_until = NULL
		  FROM (SELECT id AS old_id, running_since AS old_since FROM sandboxes
		         WHERE host_id = $1 AND status NOT IN ('stopped', 'error') FOR UPDATE) old
		 WHERE id = old.old_id
		RETURNING `+sandboxCols+`, old.old_since,
		          least(now(), coalesce((SELECT last_heartbeat FROM hosts WHERE id = $1), now()))`, hostID, reason)
	if err != nil {
		return nil, dbErr("fail host sandboxes", err)
	}
	ids, events, err := collectRunEnds(rows, "fail host sandboxes", s.usage)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if _, err := release(ctx, tx, id); err != nil {
			return nil, err
		}
	}
	return ids, EnqueueOutbox(ctx, tx, events...)
}

// HostCandidates returns the healthy hosts that fit need, most free
// memory first. A host's use is the larger of what its agent reported and
// what the control plane allocated there.
func (s *Store) HostCandidates(ctx context.Context, need models.Resources) ([]Host, error) {
	hosts, err := collectHosts(s.pool.Query(ctx, `SELECT * FROM (`+hostSelect+`
		 WHERE h.status = 'healthy') c(id, grpc_endpoint, status, agent_version, driver,
		       total_vcpus, used_vcpus, total_memory_mb, used_memory_mb, total_disk_mb, used_disk_mb,
		       sandbox_count, last_heartbeat, a_vcpus, a_memory_mb, a_disk_mb, a_n, registered_at, status_changed_at)
		 WHERE total_vcpus - greatest(used_vcpus, a_vcpus) >= $1
		   AND total_memory_mb - greatest(used_memory_mb, a_memory_mb) >= $2
		   AND ($3 = 0 OR total_disk_mb = 0 OR total_disk_mb - greatest(used_disk_mb, a_disk_mb) >= $3)
		 ORDER BY total_memory_mb - greatest(used_memory_mb, a_memory_mb) DESC, id`,
		need.VCPUs, need.MemoryMB, need.DiskMB))
	if err != nil {
		return nil, dbErr("host candidates", err)
	}
	return hosts, nil
}

func (s *Store) collectIDs(ctx context.Context, op, sql string, args ...any) ([]string, error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, dbErr(op, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, dbErr(op, err)
	}
	return ids, nil
}
