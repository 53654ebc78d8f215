package usage_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/pgtest"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
	"github.com/wrenn-dev/wrenn-sandbox/internal/testlog"
	"github.com/wrenn-dev/wrenn-sandbox/internal/usage"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// lago stands in for Lago's events API (Lago itself cannot run here): it
// checks requests the way Lago does (Bearer key, events with the required
// fields), keeps each transaction_id once and refuses one it already has
// (422 value_already_exist; a batch is refused whole), and answers with
// the queued statuses first. A queued lostAnswer stores the events but
// answers 504, as when Lago commits and the answer is lost.
type lago struct {
	t    *testing.T
	mu   sync.Mutex
	next []int
	got  []store.UsageEvent
	have map[string]bool
	reqs int
}

const lostAnswer = -1

func (l *lago) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reqs++
	if r.Method != http.MethodPost || r.Header.Get("Authorization") != "Bearer lago-key" {
		http.Error(w, `{"status":401,"error":"Unauthorized"}`, http.StatusUnauthorized)
		return
	}
	var evs []store.UsageEvent
	switch r.URL.Path {
	case "/api/v1/events/batch":
		var body struct {
			Events []store.UsageEvent `json:"events"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Events) == 0 {
			http.Error(w, `{"status":400,"error":"BadRequest"}`, http.StatusBadRequest)
			return
		}
		evs = body.Events
	case "/api/v1/events":
		var body struct {
			Event store.UsageEvent `json:"event"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, `{"status":400,"error":"BadRequest"}`, http.StatusBadRequest)
			return
		}
		evs = []store.UsageEvent{body.Event}
	default:
		http.NotFound(w, r)
		return
	}
	for _, ev := range evs {
		if ev.TransactionID == "" || ev.ExternalSubscriptionID == "" || ev.Code == "" || ev.Timestamp == 0 {
			http.Error(w, `{"status":422,"error":"Unprocessable Entity","code":"validation_errors"}`, http.StatusUnprocessableEntity)
			return
		}
		if l.have[ev.TransactionID] {
			http.Error(w, `{"status":422,"error":"Unprocessable Entity","code":"validation_errors",`+
				`"error_details":{"transaction_id":["value_already_exist"]}}`, http.StatusUnprocessableEntity)
			return
		}
	}
	code := 0
	if len(l.next) > 0 {
		code = l.next[0]
		l.next = l.next[1:]
	}
	if code > 0 {
		http.Error(w, fmt.Sprintf(`{"status":%d}`, code), code)
		return
	}
	if l.have == nil {
		l.have = map[string]bool{}
	}
	for _, ev := range evs {
		l.have[ev.TransactionID] = true
	}
	l.got = append(l.got, evs...)
	if code == lostAnswer {
		http.Error(w, `{"status":504}`, http.StatusGatewayTimeout)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"events": evs})
}

func (l *lago) events() []store.UsageEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]store.UsageEvent(nil), l.got...)
}

func (l *lago) fail(codes ...int) {
	l.mu.Lock()
	l.next = append(l.next, codes...)
	l.mu.Unlock()
}

type env struct {
	t  *testing.T
	st *store.Store
	k  store.APIKey
}

func newEnv(t *testing.T) *env {
	db := pgtest.New(t)
	st := store.New(db.Pool, slog.New(slog.NewTextHandler(testlog.Writer(t), nil)))
	st.SetUsageEvents(true)
	k, err := st.CreateAPIKey(context.Background(), store.NewAPIKey{KeyHash: fmt.Sprintf("%064x", 7), KeyPrefix: "wrn_test",
		Name: "t", OwnerID: "alice", Pool: &store.Pool{VCPUs: 100, MemoryMB: 1 << 20, StorageMB: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, st: st, k: k}
}

// run makes a sandbox run briefly and stop: one runtime event.
func (e *env) run() string {
	e.t.Helper()
	ctx := context.Background()
	sb, err := e.st.CreateSandbox(ctx, store.NewSandbox{ID: id.NewSandboxID(), OwnerID: e.k.OwnerID, APIKeyID: e.k.ID,
		Template: "minimal", Resources: models.Resources{VCPUs: 2, MemoryMB: 512}})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, to := range []models.SandboxStatus{models.StatusStarting, models.StatusRunning, models.StatusStopped} {
		if _, err := e.st.Transition(ctx, store.Transition{ID: sb.ID, To: to}); err != nil {
			e.t.Fatal(err)
		}
	}
	return sb.ID
}

func (e *env) pending() int {
	e.t.Helper()
	n, err := e.st.OutboxPending(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

func TestDeliveryAndRetries(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := &lago{t: t}
	srv := httptest.NewServer(l)
	defer srv.Close()
	s, err := usage.New(e.st, usage.Config{URL: srv.URL + "/", APIKey: "lago-key", RetryBase: 100 * time.Millisecond, RetryMax: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sid := e.run()

	// Lago is down: nothing is lost, the event waits out its backoff.
	l.fail(http.StatusServiceUnavailable)
	if n, err := s.Flush(ctx); n != 0 || err == nil {
		t.Fatalf("flush against a down lago: %d %v", n, err)
	}
	if n, err := s.Flush(ctx); n != 0 || err != nil {
		t.Fatalf("flush inside the backoff: %d %v (want nothing due)", n, err)
	}
	time.Sleep(150 * time.Millisecond)
	if n, err := s.Flush(ctx); n != 1 || err != nil {
		t.Fatalf("flush after the backoff: %d %v", n, err)
	}
	got := l.events()
	if len(got) != 1 || got[0].Properties.SandboxID != sid || got[0].Code != store.UsageEventCode ||
		got[0].ExternalSubscriptionID != "alice" || got[0].Properties.VCPUs != 2 {
		t.Fatalf("lago got %+v", got)
	}
	if e.pending() != 0 || s.Stats().Sent != 1 || s.Stats().Failed != 1 {
		t.Errorf("pending %d, stats %+v", e.pending(), s.Stats())
	}

	// Events Lago refuses wait RetryMax (an hour here) instead of hammering it.
	e.run()
	l.fail(http.StatusUnprocessableEntity)
	if n, err := s.Flush(ctx); n != 0 || err == nil {
		t.Fatalf("refused flush: %d %v", n, err)
	}
	time.Sleep(150 * time.Millisecond)
	if n, err := s.Flush(ctx); n != 0 || err != nil || e.pending() != 1 {
		t.Errorf("refused event came back after %v: %d %v, pending %d", 150*time.Millisecond, n, err, e.pending())
	}
}

// Several senders (control-plane replicas) deliver each event once.
func TestConcurrentSenders(t *testing.T) {
	e := newEnv(t)
	l := &lago{t: t}
	srv := httptest.NewServer(l)
	defer srv.Close()
	const events = 30
	for range events {
		e.run()
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 3 {
		s, err := usage.New(e.st, usage.Config{URL: srv.URL, APIKey: "lago-key", Batch: 4, Interval: 10 * time.Millisecond}, nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); s.Run(ctx) }()
	}
	deadline := time.Now().Add(20 * time.Second)
	for e.pending() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	seen := map[string]int{}
	for _, ev := range l.events() {
		seen[ev.TransactionID]++
	}
	if len(seen) != events {
		t.Fatalf("lago got %d distinct events, want %d (pending %d)", len(seen), events, e.pending())
	}
	for tx, n := range seen {
		if n != 1 {
			t.Errorf("%s delivered %d times", tx, n)
		}
	}
}

// Lago committed a batch but its answer was lost: the retry, batched with
// a new event, is refused as a duplicate; the sender then goes event by
// event, counts the duplicate as delivered and delivers the new one.
func TestLostAnswerIsNotBilledTwice(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l := &lago{t: t}
	srv := httptest.NewServer(l)
	defer srv.Close()
	s, err := usage.New(e.st, usage.Config{URL: srv.URL, APIKey: "lago-key", RetryBase: 50 * time.Millisecond, RetryMax: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.run()
	l.fail(lostAnswer)
	if n, err := s.Flush(ctx); n != 0 || err == nil {
		t.Fatalf("flush with a lost answer: %d %v", n, err)
	}
	time.Sleep(100 * time.Millisecond)
	e.run()
	if n, err := s.Flush(ctx); n != 2 || err != nil {
		t.Fatalf("retry with a duplicate in the batch: %d delivered, %v; want both", n, err)
	}
	if got := l.events(); len(got) != 2 || got[0].TransactionID == got[1].TransactionID {
		t.Errorf("lago holds %+v, want two distinct events", got)
	}
	if e.pending() != 0 {
		t.Errorf("%d events still pending", e.pending())
	}
}

func TestConfig(t *testing.T) {
	st := store.New(nil, nil)
	for _, u := range []string{"", "lago:3000", "ftp://lago", "http://"} {
		if _, err := usage.New(st, usage.Config{URL: u}, nil); err == nil {
			t.Errorf("url %q accepted", u)
		}
	}
}

// Delivered events are kept a while, then purged; undelivered ones never.
func TestPurgeSent(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.run()
	e.run()
	msgs, err := e.st.ClaimOutbox(ctx, 10, time.Minute)
	if err != nil || len(msgs) != 2 {
		t.Fatalf("claim: %d %v", len(msgs), err)
	}
	if err := e.st.MarkOutboxSent(ctx, msgs[0].ID); err != nil {
		t.Fatal(err)
	}
	if n, err := e.st.PurgeSentOutbox(ctx, time.Hour); n != 0 || err != nil {
		t.Fatalf("purge of a fresh delivery: %d %v", n, err)
	}
	if _, err := e.st.Pool().Exec(ctx, `UPDATE usage_outbox SET sent_at = now() - interval '8 days' WHERE id = $1`, msgs[0].ID); err != nil {
		t.Fatal(err)
	}
	if n, err := e.st.PurgeSentOutbox(ctx, 7*24*time.Hour); n != 1 || err != nil {
		t.Fatalf("purge: %d %v, want 1", n, err)
	}
	if e.pending() != 1 {
		t.Errorf("the undelivered event went too: pending %d", e.pending())
	}
}
