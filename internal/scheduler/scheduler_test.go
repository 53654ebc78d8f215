package scheduler

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/pgtest"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func register(t *testing.T, st *store.Store, id string, c models.Capacity, status models.HostStatus) {
	t.Helper()
	ctx := context.Background()
	if _, err := st.UpsertHost(ctx, store.HostRegistration{ID: id, GRPCEndpoint: "127.0.0.1:1", Capacity: c}); err != nil {
		t.Fatal(err)
	}
	if status != models.HostHealthy {
		if err := st.SetHostStatus(ctx, id, status); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPick(t *testing.T) {
	db := pgtest.New(t)
	st := store.New(db.Pool, nil)
	cap := func(total, used int, mem, usedMem int64) models.Capacity {
		return models.Capacity{TotalVCPUs: total, UsedVCPUs: used, TotalMemoryMB: mem, UsedMemoryMB: usedMem}
	}
	register(t, st, "host-aaaa0001", cap(8, 6, 8192, 1024), models.HostHealthy)  // cpu 7/8 after 1
	register(t, st, "host-aaaa0002", cap(8, 1, 8192, 4096), models.HostHealthy)  // mem ~0.56
	register(t, st, "host-aaaa0003", cap(64, 0, 65536, 0), models.HostUnhealthy) // empty but sick
	register(t, st, "host-aaaa0004", cap(1, 1, 65536, 0), models.HostHealthy)    // no cpu left
	small := models.Resources{VCPUs: 1, MemoryMB: 512}
	tests := []struct {
		name, policy, pin string
		need              models.Resources
		want              string
		wantErr           error
	}{
		{"least loaded avoids busy cpu", LeastLoaded, "", small, "host-aaaa0002", nil},
		{"least loaded none fits", LeastLoaded, "", models.Resources{VCPUs: 16, MemoryMB: 512}, "", errdefs.ErrUnavailable},
		{"single pinned", SingleHost, "host-aaaa0001", small, "host-aaaa0001", nil},
		{"single pinned unhealthy", SingleHost, "host-aaaa0003", small, "", errdefs.ErrUnavailable},
		{"single pinned full", SingleHost, "host-aaaa0004", small, "", errdefs.ErrUnavailable},
		{"single any", SingleHost, "", small, "host-aaaa0001", nil}, // most free memory first
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.policy, st, tc.pin)
			if err != nil {
				t.Fatal(err)
			}
			h, err := s.Pick(context.Background(), tc.need)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.ID != tc.want {
				t.Fatalf("picked %s, want %s", h.ID, tc.want)
			}
		})
	}
	if _, err := New("random", st, ""); err == nil {
		t.Fatal("unknown policy accepted")
	}
}
