package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

var errInjected = errors.New("injected failure")

func TestSetupFailureLeavesNothing(t *testing.T) {
	w := newWorld(t)
	m := w.manager(t)
	clean := w.snapshot(t, m)
	for _, step := range setupSteps {
		t.Run(step, func(t *testing.T) {
			m.hook = func(s string) error {
				if s == step {
					return errInjected
				}
				return nil
			}
			defer func() { m.hook = nil }()
			_, err := m.Setup(context.Background(), "sbx-fail", AllowAll())
			if !errors.Is(err, errInjected) {
				t.Fatalf("Setup: %v, want the injected failure", err)
			}
			checkNoLeak(t, clean, w.snapshot(t, m))
		})
	}
	t.Run("context canceled midway", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		m.hook = func(s string) error {
			if s == stepHostAddr {
				cancel()
			}
			return nil
		}
		defer func() { m.hook = nil }()
		_, err := m.Setup(ctx, "sbx-cancel", AllowAll())
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Setup: %v, want context.Canceled", err)
		}
		checkNoLeak(t, clean, w.snapshot(t, m))
	})
	t.Run("works after failures", func(t *testing.T) {
		h, err := m.Setup(context.Background(), "sbx-fail", AllowAll())
		if err != nil {
			t.Fatal(err)
		}
		g := newGuest(t, w.dir, h)
		runProbes(t, g.ns.ns, []probe{{"internet server", hp(allowedIP, 80), true, uplinkIP}})
		if err := m.Teardown(context.Background(), h); err != nil {
			t.Fatal(err)
		}
		checkNoLeak(t, clean, w.snapshot(t, m))
	})
}

func TestRestartKeepsNetworksAndTearsDownFromStoredHandle(t *testing.T) {
	w := newWorld(t)
	before := w.snapshot(t, nil)
	m := w.manager(t)
	ctx := context.Background()
	var stored [][]byte
	var want []Handle
	for _, id := range []string{"sbx-r1", "sbx-r2"} {
		h, err := m.Setup(ctx, id, AllowAll())
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		stored, want = append(stored, b), append(want, h)
	}
	m.Close() // the agent goes away; its sandboxes keep running

	m2 := w.manager(t)
	got := m2.List()
	if len(got) != len(want) {
		t.Fatalf("List after restart: %d handles, want %d", len(got), len(want))
	}
	for i := range got {
		if !got[i].sameObjects(want[i]) {
			t.Errorf("List after restart: %+v, want %+v", got[i], want[i])
		}
	}
	// The network still works after the new manager replaced its tables.
	g := newGuest(t, w.dir, want[0])
	runProbes(t, g.ns.ns, []probe{
		{"internet server", hp(allowedIP, 80), true, uplinkIP},
		{"metadata", hp(metadata, 80), false, ""},
	})

	var h Handle
	if err := json.Unmarshal(stored[0], &h); err != nil {
		t.Fatal(err)
	}
	tampered := h
	tampered.NetNS, tampered.NetNSPath = "not-ours", filepath.Join(w.dir, "not-ours")
	if err := m2.Teardown(ctx, tampered); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("Teardown of a handle that disagrees with the lease: %v, want ErrConflict", err)
	}
	for _, b := range stored {
		if err := json.Unmarshal(b, &h); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := m2.Teardown(ctx, h); err != nil {
				t.Fatalf("Teardown from stored handle: %v", err)
			}
		}
	}
	if err := m2.Uninstall(ctx); err != nil {
		t.Fatal(err)
	}
	checkNoLeak(t, before, w.snapshot(t, m2))
}

// crashEnv carries a crash helper's job to a child test binary.
const crashEnv = "WRN_NETWORK_CRASH_HELPER"

type crashJob struct {
	StateDir, HostNS, NetNSDir, Step, SandboxID string
}

// TestMain lets the test binary double as a host agent that dies (exit 3)
// in the middle of Setup, or as a jailed VMM attaching to a TAP.
func TestMain(m *testing.M) {
	if v := os.Getenv(crashEnv); v != "" {
		os.Exit(crashHelper(v))
	}
	if v := os.Getenv(tapEnv); v != "" {
		os.Exit(tapHelper(v))
	}
	os.Exit(m.Run())
}

func crashHelper(v string) int {
	var job crashJob
	if err := json.Unmarshal([]byte(v), &job); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	m, err := New(Config{StateDir: job.StateDir, HostNS: job.HostNS, NetNSDir: job.NetNSDir, NamePrefix: testPrefix})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	m.hook = func(s string) error {
		if s == job.Step {
			os.Exit(3) // no undo, no deferred functions: a kill -9
		}
		return nil
	}
	_, err = m.Setup(context.Background(), job.SandboxID, AllowAll())
	fmt.Fprintln(os.Stderr, "setup returned:", err)
	return 4
}

func TestCrashDuringSetupIsCleanedOnRestart(t *testing.T) {
	for _, step := range []string{stepVeth, stepNFTables, stepReady} {
		t.Run(step, func(t *testing.T) {
			w := newWorld(t)
			before := w.snapshot(t, nil)
			job, _ := json.Marshal(crashJob{StateDir: w.cfg.StateDir, HostNS: w.cfg.HostNS, NetNSDir: w.dir, Step: step, SandboxID: "sbx-crash"})
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), crashEnv+"="+string(job))
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 3 {
				t.Fatalf("crash helper: %v, want exit 3\n%s", err, out)
			}
			m := w.manager(t)
			hs := m.List()
			if len(hs) != 1 || hs[0].SandboxID != "sbx-crash" {
				t.Fatalf("List after crash: %+v", hs)
			}
			if _, err := os.Stat(hs[0].NetNSPath); err != nil {
				t.Fatalf("the crash should have left the namespace behind: %v", err)
			}
			if step != stepVeth && !slices.Contains(w.host.linkNames(t), hs[0].HostVeth) {
				t.Fatalf("the crash should have left veth %s behind", hs[0].HostVeth)
			}
			if err := m.Reconcile(context.Background(), func(string) bool { return false }); err != nil {
				t.Fatal(err)
			}
			if err := m.Uninstall(context.Background()); err != nil {
				t.Fatal(err)
			}
			checkNoLeak(t, before, w.snapshot(t, m))
		})
	}
	t.Run("setup again after crash rebuilds", func(t *testing.T) {
		w := newWorld(t)
		before := w.snapshot(t, nil)
		job, _ := json.Marshal(crashJob{StateDir: w.cfg.StateDir, HostNS: w.cfg.HostNS, NetNSDir: w.dir, Step: stepNFTables, SandboxID: "sbx-crash"})
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashEnv+"="+string(job))
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Fatalf("crash helper did not crash\n%s", out)
		}
		m := w.manager(t)
		h, err := m.Setup(context.Background(), "sbx-crash", AllowAll())
		if err != nil {
			t.Fatal(err)
		}
		g := newGuest(t, w.dir, h)
		runProbes(t, g.ns.ns, []probe{{"internet server", hp(allowedIP, 80), true, uplinkIP}})
		if err := m.Teardown(context.Background(), h); err != nil {
			t.Fatal(err)
		}
		if err := m.Uninstall(context.Background()); err != nil {
			t.Fatal(err)
		}
		checkNoLeak(t, before, w.snapshot(t, m))
	})
}

func TestPoolExhaustion(t *testing.T) {
	w := newWorld(t)
	w.cfg.Pool = netip.MustParsePrefix("10.0.0.0/29") // two blocks
	m := w.manager(t)
	ctx := context.Background()
	clean := w.snapshot(t, m)
	var hs []Handle
	for _, id := range []string{"sbx-x1", "sbx-x2"} {
		h, err := m.Setup(ctx, id, AllowAll())
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	_, err := m.Setup(ctx, "sbx-x3", AllowAll())
	var ex *ExhaustedError
	if !errors.Is(err, errdefs.ErrResourceExhausted) || !errors.As(err, &ex) {
		t.Fatalf("third Setup: %v, want an ExhaustedError", err)
	}
	for _, h := range hs {
		if err := m.Teardown(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	checkNoLeak(t, clean, w.snapshot(t, m))
}

func TestConcurrentSetupTeardown(t *testing.T) {
	w := newWorld(t)
	m := w.manager(t)
	ctx := context.Background()
	clean := w.snapshot(t, m)
	const n = 10
	hs := make([]Handle, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { hs[i], errs[i] = m.Setup(ctx, fmt.Sprintf("sbx-c%02d", i), AllowAll()) })
	}
	wg.Wait()
	seen := map[netip.Prefix]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Setup %d: %v", i, errs[i])
		}
		if seen[hs[i].Block] {
			t.Fatalf("block %s handed out twice", hs[i].Block)
		}
		seen[hs[i].Block] = true
	}
	checkRootClean(t, w.cfg.Pool)
	for i := range n {
		wg.Go(func() { errs[i] = m.Teardown(ctx, hs[i]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	checkNoLeak(t, clean, w.snapshot(t, m))
}
