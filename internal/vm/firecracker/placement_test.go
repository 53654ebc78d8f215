package firecracker

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// TestPlacementHook: Create calls spec.Placement once with the VMM's pid
// (launch calls it before waiting for the API, so before InstanceStart),
// keeps no reference to it in the handle, and a
// hook error leaves no process and no file behind.
func TestPlacementHook(t *testing.T) {
	errPlace := errors.New("no such cgroup")
	tests := []struct {
		name    string
		hookErr error
	}{
		{name: "placed", hookErr: nil},
		{name: "hook fails", hookErr: errPlace},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newTestDriver(t, testConfig(t, RootfsDirect, ""))
			spec := testSpec(t)
			var pids []int
			spec.Placement = func(pid int) error {
				pids = append(pids, pid)
				return tt.hookErr
			}
			inst, err := d.Create(context.Background(), spec)
			if tt.hookErr != nil {
				if err == nil {
					_ = inst.Destroy(context.Background())
					t.Fatal("create succeeded despite the hook's error")
				}
				if !errors.Is(err, errPlace) {
					t.Fatalf("error %v does not wrap the hook's", err)
				}
				if ents, _ := os.ReadDir(spec.RunDir); len(ents) != 0 {
					t.Fatalf("run dir not empty: %d entries", len(ents))
				}
				if p := procsMentioning(spec.RunDir); len(p) != 0 {
					t.Fatalf("vmm still running: %v", p)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer inst.Destroy(context.Background())
			h := inst.Handle()
			if len(pids) != 1 || pids[0] != h.PID {
				t.Fatalf("hook called with %v, vmm pid %d", pids, h.PID)
			}
			if h.Spec.Placement != nil {
				t.Fatal("handle keeps the placement hook")
			}
			if st, err := inst.State(context.Background()); err != nil || st != vm.StateRunning {
				t.Fatalf("state %v %v", st, err)
			}
		})
	}
}
