package lifecycle_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
	"github.com/wrenn-dev/wrenn-sandbox/internal/lifecycle"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/pgtest"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
	"github.com/wrenn-dev/wrenn-sandbox/internal/testlog"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

const hostA, hostGone = "host-0000000a", "host-0000000b"

// fakeAgents is one host's agent that records pauses; fail makes the
// pause of a sandbox fail.
type fakeAgents struct {
	mu           sync.Mutex
	pauses       map[string]int
	hibernations map[string]int
	fail         map[string]error
}

func newFakeAgents() *fakeAgents {
	return &fakeAgents{pauses: map[string]int{}, hibernations: map[string]int{}, fail: map[string]error{}}
}

func (f *fakeAgents) PauseSandbox(_ context.Context, hostID, id string) error {
	if hostID != hostA {
		return errdefs.Errorf(errdefs.ErrUnavailable, "host %s is not connected", hostID)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail[id]; err != nil {
		return err
	}
	f.pauses[id]++
	return nil
}

func (f *fakeAgents) HibernateSandbox(_ context.Context, hostID, id string) (string, error) {
	if hostID != hostA {
		return "", errdefs.Errorf(errdefs.ErrUnavailable, "host %s is not connected", hostID)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail[id]; err != nil {
		return "", err
	}
	f.hibernations[id]++
	return "local:/snapshots/hib-" + id, nil
}

func (f *fakeAgents) count(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pauses[id]
}

func (f *fakeAgents) hibernationsOf(id string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hibernations[id]
}

func (f *fakeAgents) setFail(id string, err error) {
	f.mu.Lock()
	f.fail[id] = err
	f.mu.Unlock()
}

type env struct {
	t  *testing.T
	st *store.Store
	k  store.APIKey
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db := pgtest.New(t)
	st := store.New(db.Pool, slog.New(slog.NewTextHandler(testlog.Writer(t), nil)))
	ctx := context.Background()
	for _, h := range []string{hostA, hostGone} {
		if _, err := st.UpsertHost(ctx, store.HostRegistration{ID: h, GRPCEndpoint: "127.0.0.1:1",
			Capacity: models.Capacity{TotalVCPUs: 100, TotalMemoryMB: 1 << 20}}); err != nil {
			t.Fatal(err)
		}
	}
	k, err := st.CreateAPIKey(ctx, store.NewAPIKey{KeyHash: fmt.Sprintf("%064x", 1), KeyPrefix: "wrn_test",
		Name: "test", OwnerID: "alice", Pool: &store.Pool{VCPUs: 100, MemoryMB: 1 << 20, StorageMB: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, st: st, k: k}
}

// running makes a running sandbox on host with timeout_sec whose last
// activity was idleFor ago.
func (e *env) running(host string, timeoutSec int, idleFor time.Duration) string {
	e.t.Helper()
	ctx := context.Background()
	sb, err := e.st.CreateSandbox(ctx, store.NewSandbox{ID: id.NewSandboxID(), OwnerID: e.k.OwnerID, APIKeyID: e.k.ID,
		HostID: host, Template: "minimal", Resources: models.Resources{VCPUs: 1, MemoryMB: 128}, TimeoutSec: timeoutSec})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, to := range []models.SandboxStatus{models.StatusStarting, models.StatusRunning} {
		if _, err := e.st.Transition(ctx, store.Transition{ID: sb.ID, To: to}); err != nil {
			e.t.Fatal(err)
		}
	}
	if _, err := e.st.Pool().Exec(ctx, `UPDATE sandboxes SET last_active_at = now() - make_interval(secs => $2)
		WHERE id = $1`, sb.ID, idleFor.Seconds()); err != nil {
		e.t.Fatal(err)
	}
	return sb.ID
}

func (e *env) status(id string) models.SandboxStatus {
	e.t.Helper()
	sb, err := e.st.GetSandbox(context.Background(), store.AdminScope, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return sb.Status
}

func TestSweep(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	agents := newFakeAgents()
	m := lifecycle.New(e.st, agents, slog.New(slog.NewTextHandler(testlog.Writer(t), nil)),
		lifecycle.Config{Interval: 200 * time.Millisecond})

	idle := e.running(hostA, 60, 5*time.Minute)
	active := e.running(hostA, 60, 10*time.Second)
	never := e.running(hostA, 0, time.Hour)
	failing := e.running(hostA, 60, 5*time.Minute)
	gone := e.running(hostGone, 60, 5*time.Minute)
	agents.setFail(failing, errdefs.Errorf(errdefs.ErrInternal, "qmp stop failed"))

	n, err := m.Sweep(ctx)
	if err != nil || n != 1 {
		t.Fatalf("sweep paused %d (%v), want 1", n, err)
	}
	want := map[string]models.SandboxStatus{idle: models.StatusPaused, active: models.StatusRunning,
		never: models.StatusRunning, failing: models.StatusRunning, gone: models.StatusRunning}
	for id, st := range want {
		if got := e.status(id); got != st {
			t.Errorf("%s: %s, want %s", id, got, st)
		}
	}
	if st := m.Stats(); st.Paused != 1 || st.Failures != 2 {
		t.Errorf("stats %+v, want 1 paused and 2 failures", st)
	}
	// The failed pause waits out its backoff (one Interval after a first
	// failure), then is tried again; the paused sandbox is not paused twice.
	agents.setFail(failing, nil)
	if n, err := m.Sweep(ctx); err != nil || n != 0 || m.Stats().Failures != 2 {
		t.Fatalf("sweep during the backoff paused %d (%v), failures %d; want 0 and no new attempt", n, err, m.Stats().Failures)
	}
	time.Sleep(250 * time.Millisecond)
	if n, err := m.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep after the backoff paused %d (%v), want 1", n, err)
	}
	if e.status(failing) != models.StatusPaused || agents.count(idle) != 1 {
		t.Errorf("failing is %s, idle paused %d times", e.status(failing), agents.count(idle))
	}
	// A resumed sandbox starts a fresh idle period.
	if _, err := e.st.Transition(ctx, store.Transition{ID: idle, To: models.StatusRunning}); err != nil {
		t.Fatal(err)
	}
	if n, err := m.Sweep(ctx); err != nil || n != 0 {
		t.Errorf("sweep after resume paused %d (%v), want 0", n, err)
	}
}

// pausedFor makes a paused sandbox on host whose pause began that long ago.
func (e *env) pausedFor(host string, d time.Duration) string {
	e.t.Helper()
	ctx := context.Background()
	id := e.running(host, 0, 0)
	if _, err := e.st.Transition(ctx, store.Transition{ID: id, To: models.StatusPaused}); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.st.Pool().Exec(ctx, `UPDATE sandboxes SET paused_at = now() - make_interval(secs => $2)
		WHERE id = $1`, id, d.Seconds()); err != nil {
		e.t.Fatal(err)
	}
	return id
}

func TestSweepHibernates(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	agents := newFakeAgents()
	log := slog.New(slog.NewTextHandler(testlog.Writer(t), nil))
	long := e.pausedFor(hostA, 2*time.Hour)
	recent := e.pausedFor(hostA, 10*time.Minute)
	busy := e.pausedFor(hostA, 3*time.Hour)
	failing := e.pausedFor(hostA, 3*time.Hour)
	agents.setFail(failing, errdefs.Errorf(errdefs.ErrResourceExhausted, "snapshot store full"))
	// A user is resuming busy right now: its lease keeps the sweep away.
	if _, err := e.st.BeginOp(ctx, store.Op{ID: busy, From: []models.SandboxStatus{models.StatusPaused},
		To: models.StatusRunning, Name: "resume"}); err != nil {
		t.Fatal(err)
	}

	off := lifecycle.New(e.st, agents, log, lifecycle.Config{})
	if n, err := off.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep without HibernateAfter changed %d (%v)", n, err)
	}
	m := lifecycle.New(e.st, agents, log, lifecycle.Config{HibernateAfter: time.Hour, Interval: 100 * time.Millisecond})
	if n, err := m.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep changed %d (%v), want 1", n, err)
	}
	want := map[string]models.SandboxStatus{long: models.StatusHibernated, recent: models.StatusPaused,
		busy: models.StatusPaused, failing: models.StatusPaused}
	for id, st := range want {
		if got := e.status(id); got != st {
			t.Errorf("%s: %s, want %s", id, got, st)
		}
	}
	sb, err := e.st.GetSandbox(ctx, store.AdminScope, long)
	if err != nil || sb.HibernateLocation != "local:/snapshots/hib-"+long {
		t.Errorf("hibernate location %q (%v)", sb.HibernateLocation, err)
	}
	if st := m.Stats(); st.Hibernated != 1 || st.Failures != 1 || agents.hibernationsOf(busy) != 0 {
		t.Errorf("stats %+v, busy hibernated %d times; want 1 hibernated, 1 failure, busy untouched", st, agents.hibernationsOf(busy))
	}
	// The failed one is free again and goes once the agent recovers and
	// its backoff has passed.
	agents.setFail(failing, nil)
	time.Sleep(150 * time.Millisecond)
	if n, err := m.Sweep(ctx); err != nil || n != 1 || e.status(failing) != models.StatusHibernated {
		t.Errorf("second sweep changed %d (%v); failing is %s", n, err, e.status(failing))
	}
}

// Two replicas: one leader at a time, every idle sandbox paused exactly
// once, and the other takes over when the leader stops.
func TestLeaderElection(t *testing.T) {
	e := newEnv(t)
	agents := newFakeAgents()
	var ids []string
	for range 5 {
		ids = append(ids, e.running(hostA, 1, time.Minute))
	}
	log := slog.New(slog.NewTextHandler(testlog.Writer(t), nil))
	cfg := lifecycle.Config{Interval: 30 * time.Millisecond}
	m1, m2 := lifecycle.New(e.st, agents, log, cfg), lifecycle.New(e.st, agents, log, cfg)
	ctx1, stop1 := context.WithCancel(context.Background())
	ctx2, stop2 := context.WithCancel(context.Background())
	defer stop2()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); m1.Run(ctx1) }()
	go func() { defer wg.Done(); m2.Run(ctx2) }()

	waitFor(t, "a leader", func() bool { return m1.Stats().Leader || m2.Stats().Leader })
	for range 20 { // a few sweep intervals
		if m1.Stats().Leader && m2.Stats().Leader {
			t.Fatal("two leaders at once")
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitFor(t, "all idle sandboxes paused", func() bool {
		for _, id := range ids {
			if e.status(id) != models.StatusPaused {
				return false
			}
		}
		return true
	})
	for _, id := range ids {
		if n := agents.count(id); n != 1 {
			t.Errorf("%s paused %d times", id, n)
		}
	}
	leader, follower := m1, m2
	stopLeader := stop1
	if m2.Stats().Leader {
		leader, follower, stopLeader = m2, m1, stop2
	}
	stopLeader()
	waitFor(t, "the other replica to take over", func() bool { return follower.Stats().Leader })
	if leader.Stats().Leader {
		t.Error("stopped replica still claims leadership")
	}
	late := e.running(hostA, 1, time.Minute)
	waitFor(t, "the new leader to pause a new idle sandbox", func() bool { return e.status(late) == models.StatusPaused })
	stop1()
	stop2()
	wg.Wait()
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSweepBillsLongRuns(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.st.SetUsageEvents(true)
	id := e.running(hostA, 0, 0)
	if _, err := e.st.Pool().Exec(ctx, `UPDATE sandboxes SET running_since = now() - interval '2 hours' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testlog.Writer(t), nil))
	for _, cp := range []time.Duration{0, time.Hour} {
		m := lifecycle.New(e.st, newFakeAgents(), log, lifecycle.Config{UsageCheckpoint: cp})
		if _, err := m.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
		n, err := e.st.OutboxPending(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[time.Duration]int{0: 0, time.Hour: 1}[cp]; n != want {
			t.Errorf("UsageCheckpoint %v: %d events, want %d", cp, n, want)
		}
	}
	if e.status(id) != models.StatusRunning {
		t.Errorf("a checkpoint changed the status to %s", e.status(id))
	}
}
