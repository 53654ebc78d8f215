package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/agentstate"
	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

const sid = "sb-0000beef"

func req() agentstate.Request {
	return agentstate.Request{Template: "minimal", VCPUs: 1, MemoryMB: 256}
}

// assertNothingHeld checks that no fake resource, record, directory or
// capacity is left.
func (r *rig) assertNothingHeld(t *testing.T) {
	t.Helper()
	if live := r.j.liveSet(); len(live) > 0 {
		t.Errorf("still held: %v", live)
	}
	if l := r.m.List(); len(l) > 0 {
		t.Errorf("sandboxes listed: %v", l)
	}
	if c := r.m.Capacity(); c.UsedVCPUs != 0 || c.UsedMemoryMB != 0 || c.UsedDiskMB != 0 || c.SandboxCount != 0 {
		t.Errorf("capacity still used: %+v", c)
	}
	if _, err := os.Stat(r.state.Dir(sid)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("sandbox directory left: %v", err)
	}
}

func TestCreateFailureAtEachStepReleasesEverything(t *testing.T) {
	tests := []struct {
		name     string
		fail     string // journal operation that fails once
		initFail bool
		noImage  bool
		released []string // release events expected, in order
	}{
		{name: "network", fail: "net.setup", released: []string{"net.teardown"}},
		{name: "cgroup", fail: "cg.create", released: []string{"cg.remove", "net.teardown"}},
		{name: "clone", noImage: true, released: []string{"cg.remove", "net.teardown"}},
		{name: "boot", fail: "vm.create", released: []string{"cg.remove", "net.teardown"}},
		// The VMM is placed inside the driver's Create: a failure there
		// leaves no VM to destroy (the driver cleans up).
		{name: "cgroup add", fail: "cg.add", released: []string{"cg.remove", "net.teardown"}},
		{name: "envd init", initFail: true, released: []string{"vm.destroy", "cg.remove", "net.teardown"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, Totals{})
			if tt.fail != "" {
				r.j.fail[tt.fail] = 1
			}
			r.d.initOK = !tt.initFail
			if tt.noImage {
				os.Remove(r.imgDir + "/image.ext4")
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if _, err := r.m.Create(ctx, sid, req()); err == nil {
				t.Fatal("create succeeded")
			}
			r.assertNothingHeld(t)
			var releases []string
			for _, e := range r.j.events {
				for _, op := range []string{"vm.destroy", "cg.remove", "net.teardown"} {
					if len(e) > len(op) && e[:len(op)] == op {
						releases = append(releases, op)
					}
				}
			}
			// Every release happens once, newest acquisition first. The
			// network's undo runs even when its Setup failed (it records
			// its lease first), hence net.teardown in every case.
			if !slices.Equal(releases, tt.released) {
				t.Fatalf("releases %v, want %v (events %v)", releases, tt.released, r.j.events)
			}
			// After the failure the same ID can be created.
			r.j.fail = map[string]int{}
			r.d.initOK = true
			if tt.noImage {
				os.WriteFile(r.imgDir+"/image.ext4", make([]byte, 1<<20), 0o644)
			}
			if _, err := r.m.Create(ctx, sid, req()); err != nil {
				t.Fatalf("create after a failed one: %v", err)
			}
			if err := r.m.Destroy(ctx, sid); err != nil {
				t.Fatal(err)
			}
			r.assertNothingHeld(t)
		})
	}
}

func TestCreateIsIdempotentUnderConcurrency(t *testing.T) {
	r := newRig(t, Totals{})
	ctx := context.Background()
	var wg sync.WaitGroup
	recs := make([]*agentstate.Record, 8)
	errs := make([]error, 8)
	for i := range recs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			recs[i], errs[i] = r.m.Create(ctx, sid, req())
		}(i)
	}
	wg.Wait()
	for i := range recs {
		if errs[i] != nil {
			t.Fatalf("create %d: %v", i, errs[i])
		}
		if !recs[i].CreatedAt.Equal(recs[0].CreatedAt) || recs[i].AccessToken != recs[0].AccessToken {
			t.Fatalf("create %d returned another sandbox", i)
		}
	}
	if n := r.j.count("vm.create"); n != 1 {
		t.Fatalf("%d VMs booted for one ID", n)
	}
	other := req()
	other.MemoryMB = 512
	if _, err := r.m.Create(ctx, sid, other); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("create with another shape: %v", err)
	}
	if c := r.m.Capacity(); c.UsedMemoryMB != 256 || c.SandboxCount != 1 {
		t.Fatalf("capacity %+v", c)
	}
	if err := r.m.Destroy(ctx, sid); err != nil {
		t.Fatal(err)
	}
	if err := r.m.Destroy(ctx, sid); err != nil {
		t.Fatalf("second destroy: %v", err)
	}
	r.assertNothingHeld(t)
}

func TestCapacityExhaustion(t *testing.T) {
	r := newRig(t, Totals{VCPUs: 2, MemoryMB: 600})
	ctx := context.Background()
	if _, err := r.m.Create(ctx, "sb-00000001", req()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.m.Create(ctx, "sb-00000002", req()); err != nil {
		t.Fatal(err)
	}
	before := len(r.j.events)
	_, err := r.m.Create(ctx, "sb-00000003", req())
	if !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("third create: %v", err)
	}
	if len(r.j.events) != before {
		t.Fatalf("a refused create acquired something: %v", r.j.events[before:])
	}
	big := req()
	big.VCPUs = 4
	big.MemoryMB = 64
	if err := r.m.Destroy(ctx, "sb-00000001"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.m.Create(ctx, "sb-00000004", big); !errors.Is(err, errdefs.ErrResourceExhausted) {
		t.Fatalf("vcpu exhaustion: %v", err)
	}
	if _, err := r.m.Create(ctx, "sb-00000005", req()); err != nil {
		t.Fatalf("create after a destroy freed capacity: %v", err)
	}
	for _, id := range []string{"sb-00000002", "sb-00000005"} {
		if err := r.m.Destroy(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	r.j.mu.Lock()
	defer r.j.mu.Unlock()
	if len(r.j.live) != 0 {
		t.Fatalf("held: %v", r.j.live)
	}
}

func TestDestroyKeepsSandboxWhenAReleaseFails(t *testing.T) {
	r := newRig(t, Totals{})
	ctx := context.Background()
	if _, err := r.m.Create(ctx, sid, req()); err != nil {
		t.Fatal(err)
	}
	r.j.fail["net.teardown"] = 1
	if err := r.m.Destroy(ctx, sid); err == nil {
		t.Fatal("destroy reported success with its network left")
	}
	rec, err := r.m.Get(sid)
	if err != nil || rec.Status != models.StatusStopped || rec.Error == "" {
		t.Fatalf("after a failed destroy: %+v %v", rec, err)
	}
	if err := r.m.Destroy(ctx, sid); err != nil {
		t.Fatalf("retried destroy: %v", err)
	}
	r.assertNothingHeld(t)
}

func TestRecoverReleasesInterruptedAndReattachesLive(t *testing.T) {
	r := newRig(t, Totals{})
	ctx := context.Background()
	// A live sandbox, made by this "agent".
	if _, err := r.m.Create(ctx, "sb-00000001", req()); err != nil {
		t.Fatal(err)
	}
	// A record left by a create interrupted after its network step.
	half := &agentstate.Record{SandboxID: "sb-00000002", Status: models.StatusStarting, Step: agentstate.StepNetwork,
		Request: req(), Network: json.RawMessage(`{"id":"sb-00000002"}`)}
	r.state.Paths(half)
	if err := r.state.Save(half); err != nil {
		t.Fatal(err)
	}
	r.j.add("net.setup sb-00000002", "net/sb-00000002", true)
	// A record whose VM is gone.
	dead := &agentstate.Record{SandboxID: "sb-00000003", Status: models.StatusRunning, Step: agentstate.StepReady,
		Request: req(), VM: &vm.Handle{Driver: "fake", ID: "sb-00000003"}}
	r.state.Paths(dead)
	if err := r.state.Save(dead); err != nil {
		t.Fatal(err)
	}
	// A directory without a record.
	os.MkdirAll(r.state.Dir("sb-00000004")+"/run", 0o700)

	// The old agent shuts down (its VMs keep running), then a new manager
	// on the same state and backends: the restarted agent. Without Close
	// the old manager's watcher would still see sb-00000001 as its VM and,
	// when m2 destroys it below, write an error record into the directory
	// m2 is removing.
	r.m.Close()
	m2, err := New(r.m.cfg)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := m2.Recover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(rep.Released)
	if !slices.Equal(rep.Reattached, []string{"sb-00000001"}) || !slices.Equal(rep.Released, []string{"sb-00000002", "sb-00000003"}) ||
		!slices.Equal(rep.LeftoverDir, []string{"sb-00000004"}) {
		t.Fatalf("report %+v", rep)
	}
	if c := m2.Capacity(); c.SandboxCount != 1 || c.UsedMemoryMB != 256 {
		t.Fatalf("capacity after recover %+v", c)
	}
	for _, gone := range []string{"sb-00000002", "sb-00000003", "sb-00000004"} {
		if _, err := os.Stat(r.state.Dir(gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: directory left", gone)
		}
	}
	if live := r.j.liveSet(); slices.Contains(live, "net/sb-00000002") {
		t.Fatalf("network of the interrupted create kept: %v", live)
	}
	if err := m2.Destroy(ctx, "sb-00000001"); err != nil {
		t.Fatal(err)
	}
	if live := r.j.liveSet(); len(live) != 0 {
		t.Fatalf("held: %v", live)
	}
}

func TestVMExitMarksSandboxFailed(t *testing.T) {
	r := newRig(t, Totals{})
	ctx := context.Background()
	if _, err := r.m.Create(ctx, sid, req()); err != nil {
		t.Fatal(err)
	}
	r.d.mu.Lock()
	inst := r.d.insts[sid]
	r.d.mu.Unlock()
	_ = inst.Destroy(ctx) // the VMM dies behind the manager's back
	deadline := time.Now().Add(5 * time.Second)
	for {
		rec, _ := r.m.Get(sid)
		if rec.Status == models.StatusError {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %s after the VMM died", rec.Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := r.m.Pause(ctx, sid); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("pause of a failed sandbox: %v", err)
	}
	if err := r.m.Destroy(ctx, sid); err != nil {
		t.Fatal(err)
	}
	r.assertNothingHeld(t)
}

func TestValidation(t *testing.T) {
	r := newRig(t, Totals{})
	ctx := context.Background()
	tests := []struct {
		id   string
		req  agentstate.Request
		kind error
	}{
		{"bad", req(), errdefs.ErrInvalidArgument},
		{sid, agentstate.Request{Template: "minimal", VCPUs: -1}, errdefs.ErrInvalidArgument},
		{sid, agentstate.Request{Template: "minimal", MemoryMB: 16}, errdefs.ErrInvalidArgument},
		{sid, agentstate.Request{Template: "minimal", Network: agentstate.NetworkPolicy{DenyCIDRs: []string{"nope"}}}, errdefs.ErrInvalidArgument},
		{sid, agentstate.Request{Template: "minimal", DiskMB: 0, TimeoutSec: -5}, errdefs.ErrInvalidArgument},
	}
	for _, tt := range tests {
		if _, err := r.m.Create(ctx, tt.id, tt.req); !errors.Is(err, tt.kind) {
			t.Errorf("Create(%s, %+v) = %v, want %v", tt.id, tt.req, err, tt.kind)
		}
	}
	if _, err := r.m.Pause(ctx, sid); !errdefs.IsNotFound(err) {
		t.Errorf("pause unknown: %v", err)
	}
	if err := r.m.Destroy(ctx, sid); err != nil {
		t.Errorf("destroy unknown: %v", err)
	}
	if _, err := r.m.Snapshot(ctx, sid, ""); !errors.Is(err, errdefs.ErrNotImplemented) {
		t.Errorf("snapshot on a driver without snapshots: %v", err)
	}
	r.assertNothingHeld(t)
}

// TestCreatePlacesVMMBeforeItRuns: the manager hands the driver a
// Placement hook that moves the VMM into the sandbox's own cgroup, and
// the driver's Create (which calls it before the guest runs) is the only
// place the VMM is moved: once, before the VM exists.
func TestCreatePlacesVMMBeforeItRuns(t *testing.T) {
	r := newRig(t, Totals{})
	ctx := context.Background()
	if _, err := r.m.Create(ctx, sid, req()); err != nil {
		t.Fatal(err)
	}
	defer r.m.Destroy(ctx, sid)
	wantAdd := `cg.add 4242 {"sandbox_id":"` + sid + `"}`
	add, create := -1, -1
	r.j.mu.Lock()
	events := slices.Clone(r.j.events)
	r.j.mu.Unlock()
	for i, e := range events {
		switch {
		case e == wantAdd:
			if add >= 0 {
				t.Fatalf("vmm moved twice: %v", events)
			}
			add = i
		case e == "vm.create "+sid:
			create = i
		}
	}
	if add < 0 || create < 0 || add > create {
		t.Fatalf("want %q before the vm exists; events %v", wantAdd, events)
	}
}
