package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

func countAudit(t *testing.T, s *store.Store) int {
	t.Helper()
	var n int
	if err := s.Pool().QueryRow(context.Background(), `SELECT count(*) FROM audit_events`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestAuditWriterFlushesOnInterval(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	w := s.NewAuditWriter(store.AuditOptions{BatchSize: 1000, FlushInterval: 20 * time.Millisecond})
	defer w.Close(ctx)

	code := 3
	ev := store.AuditEvent{SandboxID: "sb-00000001", OwnerID: "alice", APIKeyID: "key-1", Type: store.AuditExec,
		Command: "echo hi", ExitCode: &code, DurationMS: 12, StdoutBytes: 3, StderrBytes: 0}
	if !w.Record(ev) {
		t.Fatal("record refused")
	}
	deadline := time.Now().Add(5 * time.Second)
	for countAudit(t, s) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("event not flushed by the interval")
		}
		time.Sleep(10 * time.Millisecond)
	}
	got, err := s.ListAuditEvents(ctx, store.Scope{OwnerID: "alice"}, store.AuditFilter{})
	if err != nil || len(got) != 1 {
		t.Fatalf("list: %v, %v", got, err)
	}
	e := got[0]
	if e.SandboxID != ev.SandboxID || e.Command != "echo hi" || e.ExitCode == nil || *e.ExitCode != 3 ||
		e.DurationMS != 12 || e.StdoutBytes != 3 || e.APIKeyID != "key-1" || e.CreatedAt.IsZero() || e.Path != "" {
		t.Errorf("stored %+v", e)
	}
	if st := w.Stats(); st.Written != 1 || st.Dropped != 0 || st.Failed != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestAuditWriterCloseDrains(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	// A long interval: only batch size and Close can flush.
	w := s.NewAuditWriter(store.AuditOptions{Buffer: 20000, BatchSize: 256, FlushInterval: time.Hour})
	const writers, each = 8, 1000
	var wg sync.WaitGroup
	for g := 0; g < writers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				w.Record(store.AuditEvent{SandboxID: fmt.Sprintf("sb-%08x", g), OwnerID: "alice", Type: store.AuditFileWrite,
					Path: "/tmp/f", BytesIn: int64(i)})
			}
		}()
	}
	wg.Wait()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	st := w.Stats()
	if st.Dropped != 0 || st.Failed != 0 || st.Written != writers*each {
		t.Errorf("stats %+v, want %d written", st, writers*each)
	}
	if n := countAudit(t, s); n != writers*each {
		t.Errorf("%d rows, want %d", n, writers*each)
	}
	// Closed: Record refuses and counts, never panics; Close is idempotent.
	if w.Record(store.AuditEvent{SandboxID: "x", OwnerID: "alice", Type: "exec"}) {
		t.Error("record after close accepted")
	}
	if err := w.Close(ctx); err != nil {
		t.Errorf("second close: %v", err)
	}
	if w.Stats().Dropped != 1 {
		t.Errorf("dropped = %d, want 1", w.Stats().Dropped)
	}
}

func TestAuditWriterNeverBlocks(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	// Hold an exclusive lock on the table so the writer's COPY hangs.
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	w := s.NewAuditWriter(store.AuditOptions{Buffer: 10, BatchSize: 5, FlushInterval: time.Millisecond})
	start := time.Now()
	accepted := 0
	for i := 0; i < 1000; i++ {
		if w.Record(store.AuditEvent{SandboxID: "sb-00000001", OwnerID: "alice", Type: "exec"}) {
			accepted++
		}
	}
	if el := time.Since(start); el > time.Second {
		t.Errorf("1000 records with a stuck database took %v", el)
	}
	st := w.Stats()
	if st.Dropped == 0 || int(st.Dropped)+accepted != 1000 {
		t.Errorf("accepted %d, stats %+v", accepted, st)
	}
	// Release the table: everything accepted gets written on Close.
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countAudit(t, s); n != accepted || w.Stats().Written != uint64(accepted) {
		t.Errorf("rows %d, written %d, accepted %d", n, w.Stats().Written, accepted)
	}
}

func TestAuditWriterCloseDeadline(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	tx, err := s.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	w := s.NewAuditWriter(store.AuditOptions{FlushInterval: time.Hour})
	w.Record(store.AuditEvent{SandboxID: "sb-00000001", OwnerID: "alice", Type: "exec"})
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := w.Close(cctx); err == nil {
		t.Error("close with a stuck database and an expired context returned nil")
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("close took %v", el)
	}
	if st := w.Stats(); st.Failed != 1 {
		t.Errorf("stats %+v, want 1 failed", st)
	}
}

func TestListAuditEventsScopeAndPaging(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	w := s.NewAuditWriter(store.AuditOptions{})
	for i := 0; i < 30; i++ {
		owner := "alice"
		if i%3 == 0 {
			owner = "bob"
		}
		w.Record(store.AuditEvent{SandboxID: fmt.Sprintf("sb-%08x", i%2), OwnerID: owner, Type: "exec"})
	}
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	all, err := s.ListAuditEvents(ctx, store.AdminScope, store.AuditFilter{Limit: 1000})
	if err != nil || len(all) != 30 {
		t.Fatalf("admin: %d, %v", len(all), err)
	}
	mine, _ := s.ListAuditEvents(ctx, store.Scope{OwnerID: "alice"}, store.AuditFilter{})
	if len(mine) != 20 {
		t.Errorf("alice sees %d", len(mine))
	}
	for _, e := range mine {
		if e.OwnerID != "alice" {
			t.Errorf("alice sees %+v", e)
		}
	}
	// Paging by id, newest first, per sandbox.
	var ids []int64
	f := store.AuditFilter{SandboxID: "sb-00000001", Limit: 4}
	for {
		page, err := s.ListAuditEvents(ctx, store.Scope{OwnerID: "alice"}, f)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			if e.SandboxID != "sb-00000001" {
				t.Errorf("filter leaked %s", e.SandboxID)
			}
			if len(ids) > 0 && e.ID >= ids[len(ids)-1] {
				t.Errorf("not descending: %d after %d", e.ID, ids[len(ids)-1])
			}
			ids = append(ids, e.ID)
		}
		f.BeforeID = page[len(page)-1].ID
	}
	// i odd → sb-1; of those, i%3 != 0 → alice: 1,5,7,11,13,17,19,23,25,29.
	if len(ids) != 10 {
		t.Errorf("paged %d events, want 10", len(ids))
	}
	if _, err := s.ListAuditEvents(ctx, store.Scope{}, store.AuditFilter{}); err == nil {
		t.Error("scope without owner accepted")
	}
}
