package qemu

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/vmtest"
)

// TestSuite runs the shared driver suite (internal/vm/vmtest) against real
// QEMU VMs. The snapshot integrity cycle (a counting loop and files across
// five snapshot/destroy/restore rounds) is TestLifecycle in driver_test.go.
func TestSuite(t *testing.T) {
	im := needImages(t)
	// Resolve the accelerator once: with auto every new driver would run
	// its own KVM probe boot.
	var (
		once  sync.Once
		accel string
		seq   atomic.Int64
	)
	live := &liveInstances{m: map[string]*Instance{}}
	newDriver := func(t *testing.T) (vm.Driver, vm.Spec) {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			a, err := newTestDriver(t, Config{}).Accel(ctx, im.Kernel)
			if err != nil {
				t.Fatal(err)
			}
			accel = a
		})
		d := &restartingDriver{Driver: newTestDriver(t, Config{Accel: accel}), live: live}
		return d, testSpec(t, im, fmt.Sprintf("qt-suite-%d", seq.Add(1)))
	}
	vmtest.Run(t, newDriver)
	vmtest.RunMore(t, newDriver, vmtest.Failures{NoEnvdRootfs: im.NoEnvdRootfs})
}

// restartingDriver models, inside one test process, the agent restart the
// suite's Reattach test stands for: QEMU's QMP socket serves one client at
// a time, and a real restart closes the old agent's connection. So before
// reattaching it detaches the instance this process still holds for the
// handle's ID (Instance.Detach, what an agent does when it stops).
type restartingDriver struct {
	*Driver
	live *liveInstances
}

type liveInstances struct {
	mu sync.Mutex
	m  map[string]*Instance
}

func (d *restartingDriver) Create(ctx context.Context, spec vm.Spec) (vm.Instance, error) {
	inst, err := d.Driver.Create(ctx, spec)
	if err == nil {
		d.live.mu.Lock()
		d.live.m[spec.ID] = inst.(*Instance)
		d.live.mu.Unlock()
	}
	return inst, err
}

func (d *restartingDriver) Reattach(ctx context.Context, h vm.Handle) (vm.Instance, error) {
	d.live.mu.Lock()
	old := d.live.m[h.ID]
	delete(d.live.m, h.ID)
	d.live.mu.Unlock()
	if old != nil {
		old.Detach()
	}
	return d.Driver.Reattach(ctx, h)
}
