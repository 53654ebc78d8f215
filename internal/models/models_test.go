package models

import (
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

func TestTransitions(t *testing.T) {
	allowed := map[[2]SandboxStatus]bool{
		{StatusPending, StatusStarting}:   true,
		{StatusPending, StatusStopped}:    true,
		{StatusPending, StatusError}:      true,
		{StatusStarting, StatusRunning}:   true,
		{StatusStarting, StatusStopped}:   true,
		{StatusStarting, StatusError}:     true,
		{StatusRunning, StatusPaused}:     true,
		{StatusRunning, StatusHibernated}: true,
		{StatusRunning, StatusStopped}:    true,
		{StatusRunning, StatusError}:      true,
		{StatusPaused, StatusRunning}:     true,
		{StatusPaused, StatusHibernated}:  true,
		{StatusPaused, StatusStopped}:     true,
		{StatusPaused, StatusError}:       true,
		{StatusHibernated, StatusRunning}: true,
		{StatusHibernated, StatusStopped}: true,
		{StatusHibernated, StatusError}:   true,
		{StatusError, StatusStopped}:      true,
	}
	// Every pair of states, checked against the table above.
	for _, from := range AllStatuses {
		for _, to := range AllStatuses {
			want := allowed[[2]SandboxStatus{from, to}]
			if got := CanTransition(from, to); got != want {
				t.Errorf("CanTransition(%s, %s) = %v, want %v", from, to, got, want)
			}
			err := Transition(from, to)
			if want && err != nil {
				t.Errorf("Transition(%s, %s) = %v", from, to, err)
			}
			if !want && !errdefs.IsConflict(err) {
				t.Errorf("Transition(%s, %s) = %v, want a conflict", from, to, err)
			}
		}
	}
	if err := Transition("bogus", StatusRunning); !errdefs.IsInvalidArgument(err) {
		t.Errorf("unknown state: %v", err)
	}
}

func TestStatusPredicates(t *testing.T) {
	tests := []struct {
		s              SandboxStatus
		terminal, live bool
	}{
		{StatusPending, false, false},
		{StatusStarting, false, true},
		{StatusRunning, false, true},
		{StatusPaused, false, true},
		{StatusHibernated, false, false},
		{StatusStopped, true, false},
		{StatusError, false, false},
	}
	for _, tt := range tests {
		if tt.s.Terminal() != tt.terminal || tt.s.Live() != tt.live || !tt.s.Valid() {
			t.Errorf("%s: terminal=%v live=%v", tt.s, tt.s.Terminal(), tt.s.Live())
		}
	}
	if len(AllStatuses) != len(transitions) {
		t.Fatal("AllStatuses and the transition table disagree")
	}
}

func TestResourcesAndCapacity(t *testing.T) {
	tests := []struct {
		name string
		cap  Capacity
		r    Resources
		fits bool
	}{
		{"fits", Capacity{TotalVCPUs: 4, TotalMemoryMB: 1024}, Resources{VCPUs: 2, MemoryMB: 512}, true},
		{"exactly", Capacity{TotalVCPUs: 4, UsedVCPUs: 2, TotalMemoryMB: 1024, UsedMemoryMB: 512}, Resources{VCPUs: 2, MemoryMB: 512}, true},
		{"vcpu short", Capacity{TotalVCPUs: 4, UsedVCPUs: 3, TotalMemoryMB: 1024}, Resources{VCPUs: 2, MemoryMB: 128}, false},
		{"memory short", Capacity{TotalVCPUs: 4, TotalMemoryMB: 1024, UsedMemoryMB: 1000}, Resources{VCPUs: 1, MemoryMB: 128}, false},
		{"disk short", Capacity{TotalVCPUs: 4, TotalMemoryMB: 1024, TotalDiskMB: 100}, Resources{VCPUs: 1, MemoryMB: 128, DiskMB: 200}, false},
		{"disk unknown", Capacity{TotalVCPUs: 4, TotalMemoryMB: 1024}, Resources{VCPUs: 1, MemoryMB: 128, DiskMB: 200}, true},
		{"overused", Capacity{TotalVCPUs: 1, UsedVCPUs: 5, TotalMemoryMB: 1024}, Resources{VCPUs: 1, MemoryMB: 64}, false},
	}
	for _, tt := range tests {
		if got := tt.cap.Fits(tt.r); got != tt.fits {
			t.Errorf("%s: Fits = %v, want %v", tt.name, got, tt.fits)
		}
	}
	for _, r := range []Resources{{VCPUs: 0, MemoryMB: 128}, {VCPUs: 1, MemoryMB: 32}, {VCPUs: 1, MemoryMB: 128, DiskMB: -1}} {
		if err := r.Validate(); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Validate(%v) = %v", r, err)
		}
	}
	if err := (Resources{VCPUs: 1, MemoryMB: 128}).Validate(); err != nil {
		t.Fatal(err)
	}
}
