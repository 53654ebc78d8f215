package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

func capOf(vcpus int, memMB int64) models.Capacity {
	return models.Capacity{TotalVCPUs: vcpus, TotalMemoryMB: memMB, TotalDiskMB: 100000}
}

func TestHostRegisterAndHeartbeat(t *testing.T) {
	ctx := context.Background()
	s, d := newStore(t)

	h, err := s.UpsertHost(ctx, store.HostRegistration{ID: "h1", GRPCEndpoint: "127.0.0.1:7001", AgentVersion: "v1",
		Driver: "qemu", Capacity: capOf(8, 16384)})
	if err != nil {
		t.Fatal(err)
	}
	if h.Status != models.HostHealthy || h.GRPCEndpoint != "127.0.0.1:7001" || h.Capacity.TotalVCPUs != 8 ||
		h.LastHeartbeat.IsZero() || h.Driver != "qemu" {
		t.Errorf("registered %+v", h)
	}
	// Re-register: new endpoint and version, same row.
	h, err = s.UpsertHost(ctx, store.HostRegistration{ID: "h1", GRPCEndpoint: "127.0.0.1:7002", AgentVersion: "v2",
		Capacity: capOf(16, 32768)})
	if err != nil || h.GRPCEndpoint != "127.0.0.1:7002" || h.AgentVersion != "v2" || h.Capacity.TotalVCPUs != 16 {
		t.Errorf("re-registered %+v, %v", h, err)
	}
	if _, err := s.UpsertHost(ctx, store.HostRegistration{ID: "h2"}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("no endpoint: %v", err)
	}

	c := capOf(16, 32768)
	c.UsedVCPUs, c.UsedMemoryMB, c.SandboxCount = 3, 2048, 2
	before := h.LastHeartbeat
	h, err = s.Heartbeat(ctx, "h1", c)
	if err != nil || h.Capacity != c || !h.LastHeartbeat.After(before) {
		t.Errorf("heartbeat: %+v, %v", h, err)
	}
	if _, err := s.Heartbeat(ctx, "nope", c); !errdefs.IsNotFound(err) {
		t.Errorf("heartbeat of unknown host: %v", err)
	}

	// Staleness: age h1's heartbeat, register a fresh h2 and a draining h3.
	if _, err := s.UpsertHost(ctx, store.HostRegistration{ID: "h2", GRPCEndpoint: "127.0.0.1:7003", Capacity: capOf(4, 4096)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpsertHost(ctx, store.HostRegistration{ID: "h3", GRPCEndpoint: "127.0.0.1:7004", Capacity: capOf(4, 4096)}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetHostStatus(ctx, "h3", models.HostDraining); err != nil {
		t.Fatal(err)
	}
	if err := s.SetHostStatus(ctx, "zz", models.HostDraining); !errdefs.IsNotFound(err) {
		t.Errorf("set status of unknown host: %v", err)
	}
	if _, err := d.Pool.Exec(ctx, `UPDATE hosts SET last_heartbeat = now() - interval '45 seconds' WHERE id IN ('h1', 'h3')`); err != nil {
		t.Fatal(err)
	}
	stale, err := s.MarkStaleHosts(ctx, 30*time.Second)
	slices.Sort(stale)
	if err != nil || !slices.Equal(stale, []string{"h1", "h3"}) {
		t.Fatalf("stale = %v, %v", stale, err)
	}
	if again, _ := s.MarkStaleHosts(ctx, 30*time.Second); len(again) != 0 {
		t.Errorf("marked twice: %v", again)
	}
	hosts, err := s.ListHosts(ctx)
	if err != nil || len(hosts) != 3 || hosts[0].Status != models.HostUnhealthy || hosts[1].Status != models.HostHealthy {
		t.Fatalf("list: %+v, %v", hosts, err)
	}

	// Gone after the grace period, and back to healthy on heartbeat.
	if gone, _ := s.MarkGoneHosts(ctx, time.Minute); len(gone) != 0 {
		t.Errorf("gone too early: %v", gone)
	}
	if _, err := d.Pool.Exec(ctx, `UPDATE hosts SET status_changed_at = now() - interval '2 minutes' WHERE id = 'h1'`); err != nil {
		t.Fatal(err)
	}
	if gone, err := s.MarkGoneHosts(ctx, time.Minute); err != nil || len(gone) != 1 || gone[0].ID != "h1" || len(gone[0].Sandboxes) != 0 {
		t.Errorf("gone = %+v, %v", gone, err)
	}
	h, err = s.Heartbeat(ctx, "h1", c)
	if err != nil || h.Status != models.HostHealthy {
		t.Errorf("heartbeat after gone: %+v, %v", h.Status, err)
	}
	// h3 went unhealthy while draining, so registering makes it healthy.
	h, _ = s.UpsertHost(ctx, store.HostRegistration{ID: "h3", GRPCEndpoint: "127.0.0.1:7004", Capacity: capOf(4, 4096)})
	if h.Status != models.HostHealthy {
		t.Errorf("stale host after re-register: %s", h.Status)
	}
	// A draining host stays draining across re-registration.
	if err := s.SetHostStatus(ctx, "h3", models.HostDraining); err != nil {
		t.Fatal(err)
	}
	h, _ = s.UpsertHost(ctx, store.HostRegistration{ID: "h3", GRPCEndpoint: "127.0.0.1:7004", Capacity: capOf(4, 4096)})
	if h.Status != models.HostDraining {
		t.Errorf("draining host after re-register: %s", h.Status)
	}
	if _, err := s.GetHost(ctx, "nope"); !errdefs.IsNotFound(err) {
		t.Errorf("get unknown host: %v", err)
	}
}

func TestFailHostSandboxes(t *testing.T) {
	ctx := context.Background()
	s, d := newStore(t)
	k := mkKey(t, s, "alice", store.Pool{VCPUs: 10, MemoryMB: 10000, StorageMB: 0})
	for _, h := range []string{"h1", "h2"} {
		if _, err := s.UpsertHost(ctx, store.HostRegistration{ID: h, GRPCEndpoint: "127.0.0.1:1", Capacity: capOf(8, 8192)}); err != nil {
			t.Fatal(err)
		}
	}
	on := func(h string) func(*store.NewSandbox) { return func(n *store.NewSandbox) { n.HostID = h } }
	a := mkSandbox(t, s, k, on("h1"))
	b := mkSandbox(t, s, k, on("h1"))
	c := mkSandbox(t, s, k, on("h1"))
	other := mkSandbox(t, s, k, on("h2"))
	if _, err := s.MarkStopped(ctx, store.AdminScope, c.ID); err != nil {
		t.Fatal(err)
	}
	ids, err := s.FailHostSandboxes(ctx, "h1", "host h1 gone")
	slices.Sort(ids)
	want := []string{a.ID, b.ID}
	slices.Sort(want)
	if err != nil || !slices.Equal(ids, want) {
		t.Fatalf("failed %v, %v; want %v", ids, err, want)
	}
	for _, id := range want {
		sb, _ := s.GetSandbox(ctx, store.AdminScope, id)
		if sb.Status != models.StatusError || sb.Error != "host h1 gone" {
			t.Errorf("%s: %s %q", id, sb.Status, sb.Error)
		}
	}
	if sb, _ := s.GetSandbox(ctx, store.AdminScope, other.ID); sb.Status != models.StatusPending {
		t.Errorf("other host's sandbox touched: %s", sb.Status)
	}
	key, _ := s.GetAPIKey(ctx, store.AdminScope, k.ID)
	if key.Used != (store.Pool{VCPUs: 1, MemoryMB: 128}) {
		t.Errorf("used after failing h1 = %+v", key.Used)
	}
	if ids, _ := s.FailHostSandboxes(ctx, "h1", "again"); len(ids) != 0 {
		t.Errorf("second fail touched %v", ids)
	}
	// Declaring a host gone fails its sandboxes in the same transaction.
	if _, err := d.Pool.Exec(ctx, `UPDATE hosts SET status = 'unhealthy', status_changed_at = now() - interval '1 hour' WHERE id = 'h2'`); err != nil {
		t.Fatal(err)
	}
	gone, err := s.MarkGoneHosts(ctx, time.Minute)
	if err != nil || len(gone) != 1 || gone[0].ID != "h2" || !slices.Equal(gone[0].Sandboxes, []string{other.ID}) {
		t.Fatalf("gone %+v, %v", gone, err)
	}
	if sb, _ := s.GetSandbox(ctx, store.AdminScope, other.ID); sb.Status != models.StatusError || sb.Error != "host h2 stopped answering" {
		t.Errorf("sandbox of the gone host: %s %q", sb.Status, sb.Error)
	}
	if drift, _ := s.CheckPools(ctx); len(drift) != 0 {
		t.Errorf("drift %+v", drift)
	}
}

func TestHostCandidates(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	k := mkKey(t, s, "alice", bigPool)
	reg := func(id string, c models.Capacity) {
		t.Helper()
		if _, err := s.UpsertHost(ctx, store.HostRegistration{ID: id, GRPCEndpoint: "127.0.0.1:1", Capacity: c}); err != nil {
			t.Fatal(err)
		}
	}
	reg("big", capOf(16, 32768))
	reg("small", capOf(2, 2048))
	busy := capOf(16, 65536)
	busy.UsedVCPUs, busy.UsedMemoryMB = 15, 1024 // agent-reported use
	reg("busy", busy)
	reg("sick", capOf(64, 1<<20))
	reg("drain", capOf(64, 1<<20))
	if err := s.SetHostStatus(ctx, "sick", models.HostUnhealthy); err != nil {
		t.Fatal(err)
	}
	if err := s.SetHostStatus(ctx, "drain", models.HostDraining); err != nil {
		t.Fatal(err)
	}
	// Allocations the control plane made on "big": 12 vcpus, 30000 MiB.
	for i := 0; i < 3; i++ {
		mkSandbox(t, s, k, func(n *store.NewSandbox) {
			n.HostID = "big"
			n.Resources = models.Resources{VCPUs: 4, MemoryMB: 10000}
		})
	}
	stopped := mkSandbox(t, s, k, func(n *store.NewSandbox) {
		n.HostID = "small"
		n.Resources = models.Resources{VCPUs: 2, MemoryMB: 2048}
	})
	if _, err := s.MarkStopped(ctx, store.AdminScope, stopped.ID); err != nil {
		t.Fatal(err)
	}

	names := func(hs []store.Host) []string {
		var out []string
		for _, h := range hs {
			out = append(out, h.ID)
		}
		return out
	}
	tests := []struct {
		need models.Resources
		want []string
	}{
		// free mem: busy 64512, big 2768, small 2048 (the stopped one frees it).
		{models.Resources{VCPUs: 1, MemoryMB: 512}, []string{"busy", "big", "small"}},
		{models.Resources{VCPUs: 2, MemoryMB: 2048}, []string{"big", "small"}},
		{models.Resources{VCPUs: 4, MemoryMB: 2048}, []string{"big"}},
		{models.Resources{VCPUs: 1, MemoryMB: 4096}, []string{"busy"}},
		{models.Resources{VCPUs: 5, MemoryMB: 1024}, nil},
		{models.Resources{VCPUs: 1, MemoryMB: 512, DiskMB: 200000}, nil},
	}
	for _, tt := range tests {
		got, err := s.HostCandidates(ctx, tt.need)
		if err != nil || !slices.Equal(names(got), tt.want) {
			t.Errorf("need %v: got %v, %v; want %v", tt.need, names(got), err, tt.want)
		}
	}
	h, _ := s.GetHost(ctx, "big")
	if h.Allocated != (models.Resources{VCPUs: 12, MemoryMB: 30000}) || h.AllocatedSandboxes != 3 {
		t.Errorf("big allocated %+v (%d)", h.Allocated, h.AllocatedSandboxes)
	}
}
