package agentclient

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/pgtest"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// Register records the host the agent names; Run keeps it healthy while
// the agent answers and it turns unhealthy once heartbeats stop.
func TestPoolRegisterAndHeartbeat(t *testing.T) {
	db := pgtest.New(t)
	st := store.New(db.Pool, slog.New(slog.DiscardHandler))
	srv := &scripted{}
	c := start(t, srv) // for its endpoint and TLS material
	p := NewPool(c.tlsForTest, st, slog.New(slog.DiscardHandler))
	defer p.Close()
	if _, err := p.Get("host-test"); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Fatalf("unknown host: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx, []string{c.Endpoint()}, Heartbeats{Interval: 100 * time.Millisecond, GoneAfter: 500 * time.Millisecond})
	}()
	waitStatus(t, st, models.HostHealthy)
	h, err := st.GetHost(context.Background(), "host-test")
	if err != nil || h.Capacity.TotalVCPUs != 8 || h.GRPCEndpoint != c.Endpoint() {
		t.Fatalf("host %+v %v", h, err)
	}
	if got, err := p.Get("host-test"); err != nil || got.Endpoint() != c.Endpoint() {
		t.Fatalf("get: %v", err)
	}
	// A sandbox on the host, to be failed when the host is gone.
	key, err := st.CreateAPIKey(context.Background(), store.NewAPIKey{KeyHash: strings.Repeat("ab", 32), OwnerID: "o"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreateSandbox(context.Background(), store.NewSandbox{ID: "sb-0000beef", OwnerID: "o", APIKeyID: key.ID,
		HostID: "host-test", Template: "minimal", Resources: models.Resources{VCPUs: 1, MemoryMB: 256}}); err != nil {
		t.Fatal(err)
	}
	c.stopServer()
	waitStatus(t, st, models.HostUnhealthy)
	waitStatus(t, st, store.HostGone)
	sb, err := st.GetSandbox(context.Background(), store.AdminScope, "sb-0000beef")
	if err != nil || sb.Status != models.StatusError || !strings.Contains(sb.Error, "host-test") {
		t.Fatalf("sandbox on gone host: %s %q %v", sb.Status, sb.Error, err)
	}
	cancel()
	<-done
}

func waitStatus(t *testing.T, st *store.Store, want models.HostStatus) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h, err := st.GetHost(context.Background(), "host-test")
		if err == nil && h.Status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("host status %q (%v), want %q", h.Status, err, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
