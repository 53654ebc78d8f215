package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

func TestOperationLease(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	alice := mkKey(t, s, "alice", bigPool)
	mkKey(t, s, "bob", bigPool)
	sb := mkRunning(t, s, alice, 60, 0)
	pause := store.Op{ID: sb.ID, OwnerID: "alice", From: []models.SandboxStatus{models.StatusRunning}, To: models.StatusPaused, Name: "pause"}

	if _, err := s.BeginOp(ctx, pause); err != nil {
		t.Fatal(err)
	}
	// A second operation is refused while the lease lives, saying why.
	hib := store.Op{ID: sb.ID, From: []models.SandboxStatus{models.StatusRunning, models.StatusPaused}, To: models.StatusHibernated, Name: "hibernate"}
	_, err := s.BeginOp(ctx, hib)
	if !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "busy: pause in progress") {
		t.Fatalf("second op: %v", err)
	}
	// Ending another operation's lease does nothing.
	if err := s.EndOp(ctx, sb.ID, "hibernate"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BeginOp(ctx, hib); !errdefs.IsConflict(err) {
		t.Fatalf("lease ended by the wrong operation: %v", err)
	}
	// The status change ends the lease.
	if _, err := s.Transition(ctx, store.Transition{ID: sb.ID, From: pause.From, To: models.StatusPaused}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BeginOp(ctx, hib); err != nil {
		t.Fatalf("after the transition: %v", err)
	}
	// A failed operation ends its lease with EndOp.
	if err := s.EndOp(ctx, sb.ID, "hibernate"); err != nil {
		t.Fatal(err)
	}
	// Wrong status: a conflict naming the status.
	_, err = s.BeginOp(ctx, pause)
	if !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "is paused, cannot become paused") {
		t.Fatalf("pause a paused sandbox: %v", err)
	}
	// Another owner's, or a missing sandbox: not found.
	other := pause
	other.OwnerID, other.From = "bob", []models.SandboxStatus{models.StatusPaused}
	if _, err := s.BeginOp(ctx, other); !errdefs.IsNotFound(err) {
		t.Fatalf("another owner: %v", err)
	}
	// An expired lease (its holder died) can be taken over.
	resume := store.Op{ID: sb.ID, From: []models.SandboxStatus{models.StatusPaused}, To: models.StatusRunning, Name: "resume", TTL: 50 * time.Millisecond}
	if _, err := s.BeginOp(ctx, resume); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := s.BeginOp(ctx, resume); err != nil {
		t.Fatalf("expired lease not taken over: %v", err)
	}
}
