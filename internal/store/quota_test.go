package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

// TestConcurrentReservations: 50 creates race for a pool that fits 5.
// Exactly 5 win, 45 get ErrPoolExhausted naming the resource, and after
// every sandbox is released (twice, concurrently) the pool is exactly
// free again.
func TestConcurrentReservations(t *testing.T) {
	const racers, fits = 50, 5
	ctx := context.Background()
	d := newDB(t)
	// A pool wide enough that all 50 transactions really run at once.
	cfg, err := pgxpool.ParseConfig(d.DSN)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = racers + 5
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s := store.New(pool, nil)

	tests := []struct {
		name     string
		pool     store.Pool
		each     models.Resources
		resource string
	}{
		{"vcpus", store.Pool{VCPUs: fits * 2, MemoryMB: 1 << 20, StorageMB: 1 << 20},
			models.Resources{VCPUs: 2, MemoryMB: 256, DiskMB: 100}, store.ResourceVCPUs},
		{"memory", store.Pool{VCPUs: 1000, MemoryMB: fits*512 + 511, StorageMB: 1 << 20},
			models.Resources{VCPUs: 1, MemoryMB: 512, DiskMB: 0}, store.ResourceMemoryMB},
		{"storage", store.Pool{VCPUs: 1000, MemoryMB: 1 << 20, StorageMB: fits * 1000},
			models.Resources{VCPUs: 1, MemoryMB: 64, DiskMB: 1000}, store.ResourceStorageMB},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := mkKey(t, s, "racer-"+tt.name, tt.pool)
			for round := 0; round < 3; round++ {
				var (
					wg    sync.WaitGroup
					start = make(chan struct{})
					mu    sync.Mutex
					won   []string
					lost  int
					other []error
				)
				for i := 0; i < racers; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						sid := id.NewSandboxID()
						<-start
						_, err := s.CreateSandbox(ctx, store.NewSandbox{ID: sid, OwnerID: k.OwnerID, APIKeyID: k.ID,
							Template: "minimal", Resources: tt.each})
						mu.Lock()
						defer mu.Unlock()
						var pe *store.PoolExhaustedError
						switch {
						case err == nil:
							won = append(won, sid)
						case errors.As(err, &pe) && errors.Is(err, errdefs.ErrPoolExhausted) && pe.Resource == tt.resource:
							lost++
						default:
							other = append(other, err)
						}
					}()
				}
				close(start)
				wg.Wait()
				if len(other) > 0 {
					t.Fatalf("round %d: unexpected errors: %v", round, other)
				}
				if len(won) != fits || lost != racers-fits {
					t.Fatalf("round %d: %d succeeded, %d pool_exhausted; want %d and %d", round, len(won), lost, fits, racers-fits)
				}
				got, _ := s.GetAPIKey(ctx, store.AdminScope, k.ID)
				want := store.Pool{VCPUs: fits * tt.each.VCPUs, MemoryMB: fits * tt.each.MemoryMB, StorageMB: fits * tt.each.DiskMB}
				if got.Used != want {
					t.Fatalf("round %d: used = %+v, want %+v", round, got.Used, want)
				}

				// Release every winner twice at once: explicit Release
				// racing the destroy path.
				var rel sync.WaitGroup
				var relMu sync.Mutex
				released := 0
				for _, sid := range won {
					rel.Add(2)
					go func() {
						defer rel.Done()
						ok, err := s.Release(ctx, sid)
						if err != nil {
							t.Error(err)
						}
						if ok {
							relMu.Lock()
							released++
							relMu.Unlock()
						}
					}()
					go func() {
						defer rel.Done()
						if _, err := s.MarkStopped(ctx, store.AdminScope, sid); err != nil {
							t.Error(err)
						}
					}()
				}
				rel.Wait()
				got, _ = s.GetAPIKey(ctx, store.AdminScope, k.ID)
				if got.Used != (store.Pool{}) {
					t.Fatalf("round %d: used after release = %+v, want zero", round, got.Used)
				}
				if drift, err := s.CheckPools(ctx); err != nil || len(drift) != 0 {
					t.Fatalf("round %d: drift %+v, %v", round, drift, err)
				}
				// And again, sequentially: nothing more is given back.
				for _, sid := range won {
					if ok, err := s.Release(ctx, sid); err != nil || ok {
						t.Fatalf("third release of %s: %v, %v", sid, ok, err)
					}
				}
				got, _ = s.GetAPIKey(ctx, store.AdminScope, k.ID)
				if got.Used != (store.Pool{}) || got.Pool != tt.pool {
					t.Fatalf("round %d: after triple release used %+v pool %+v", round, got.Used, got.Pool)
				}
			}
		})
	}
}

// BenchmarkCreateSandbox measures reserve+insert transactions per second,
// all charged to one key (the worst case: they serialise on its row), and
// spread over many keys.
func BenchmarkCreateSandbox(b *testing.B) {
	ctx := context.Background()
	s, _ := newStore(b)
	for _, keys := range []int{1, 16} {
		b.Run(fmt.Sprintf("%d keys", keys), func(b *testing.B) {
			ks := make([]store.APIKey, keys)
			for i := range ks {
				ks[i] = mkKey(b, s, fmt.Sprint("bench-", keys, "-", i), bigPool)
			}
			var n atomic.Int64
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					k := ks[int(n.Add(1))%keys]
					_, err := s.CreateSandbox(ctx, store.NewSandbox{ID: id.NewSandboxID(), OwnerID: k.OwnerID,
						APIKeyID: k.ID, Template: "minimal", Resources: small()})
					if err != nil && !errors.Is(err, errdefs.ErrAlreadyExists) {
						b.Fatal(err)
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
		})
	}
}
