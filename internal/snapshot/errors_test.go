package snapshot

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem/fstest"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// assertClean checks that a failed create or build left nothing: no QEMU
// whose command line names the cache or the run dir, no socket or build
// directory in the cache, no clone, nothing in the run dir.
func assertClean(t *testing.T, m *TemplateManager, spec CreateSpec) {
	t.Helper()
	for _, p := range []string{m.cfg.CacheDir, spec.RunDir} {
		if pids := processesNaming(p); len(pids) > 0 {
			t.Errorf("processes still running for %s: %v", p, pids)
		}
	}
	left := leftovers(m.cfg.CacheDir, func(rel string, d fs.DirEntry) bool {
		// Finished snapshots and their lock files may stay.
		top := strings.Split(rel, string(filepath.Separator))[0]
		return !strings.HasPrefix(top, ".build-") && d.Type()&fs.ModeSocket == 0
	})
	for _, l := range left {
		t.Errorf("left in the template cache: %s", l)
	}
	if _, err := os.Stat(spec.Rootfs); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("rootfs clone left: %v", err)
	}
	if ents, _ := os.ReadDir(spec.RunDir); len(ents) > 0 {
		t.Errorf("%d files left in the run dir", len(ents))
	}
}

// processesNaming lists processes whose command line contains s.
func processesNaming(s string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) && e.Name() != "self" {
			if pid := atoi(e.Name()); pid > 0 && pid != os.Getpid() {
				out = append(out, pid)
			}
		}
	}
	return out
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// registryWithout copies the test registry's manifests (linking the big
// files) into a new directory and deletes one file from it.
func registryWithout(t *testing.T, reg, drop string) string {
	t.Helper()
	root := t.TempDir()
	err := filepath.WalkDir(reg, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(reg, p)
		dst := filepath.Join(root, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(dst, 0o755)
		case rel == drop:
			return nil
		case d.Name() == "manifest.json":
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(dst, b, 0o644)
		default:
			return os.Symlink(p, dst)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// TestCreateErrors: templates that cannot become sandboxes fail with a
// clear error and leave no process, socket, build directory or clone.
func TestCreateErrors(t *testing.T) {
	reg := fstest.MinimalRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	tests := []struct {
		name     string
		registry func(t *testing.T) string
		template string
		mutate   func(*Config)
		want     error
		contains []string
	}{
		{name: "bad template name", template: "../minimal", want: filesystem.ErrInvalidName, contains: []string{`"../minimal"`}},
		{name: "unknown template", template: "python2", want: filesystem.ErrNotFound, contains: []string{`template "python2" not found (have minimal, noenvd)`}},
		{name: "rootfs missing", template: fstest.Minimal, want: filesystem.ErrImageMissing, contains: []string{"rootfs of template minimal"},
			registry: func(t *testing.T) string { return registryWithout(t, reg, "templates/minimal/rootfs.ext4") }},
		{name: "kernel missing", template: fstest.Minimal, want: filesystem.ErrImageMissing, contains: []string{"kernel"},
			registry: func(t *testing.T) string {
				k, _ := filepath.Glob(filepath.Join(reg, "kernel", "vmlinuz-*"))
				rel, _ := filepath.Rel(reg, k[0])
				return registryWithout(t, reg, rel)
			}},
		{name: "guest without envd", template: fstest.NoEnvd,
			contains: []string{"build snapshot of template noenvd", "qemu stopped before the guest was up", "envd is not an executable"}},
		{name: "boot that never finishes", template: fstest.Minimal, want: vm.ErrBootTimeout,
			mutate:   func(c *Config) { c.BootTimeout = 700 * time.Millisecond },
			contains: []string{"no answer from the guest within 700ms"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := reg
			if tc.registry != nil {
				r = tc.registry(t)
			}
			muts := []func(*Config){}
			if tc.mutate != nil {
				muts = append(muts, tc.mutate)
			}
			m := testManager(t, r, muts...)
			spec := sandboxSpec(t, "st-err", tc.template)
			start := time.Now()
			sb, err := m.CreateFromTemplate(ctx, spec)
			if err == nil {
				sb.Destroy(ctx)
				t.Fatal("create succeeded")
			}
			t.Logf("failed after %v: %v", time.Since(start), err)
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err is not %v", tc.want)
			}
			for _, s := range tc.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error lacks %q", s)
				}
			}
			assertClean(t, m, spec)
		})
	}
}

// TestCreateFromBrokenSnapshot: a snapshot whose memory state is damaged
// fails the restore with QEMU's reason and leaves nothing behind.
func TestCreateFromBrokenSnapshot(t *testing.T) {
	reg := fstest.MinimalRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	m := testManager(t, reg)
	tm, err := m.Ensure(ctx, fstest.Minimal, "")
	if err != nil {
		t.Fatal(err)
	}
	mem := filepath.Join(tm.Dir, "mem.state")
	if err := os.Truncate(mem, 4096); err != nil {
		t.Fatal(err)
	}
	spec := sandboxSpec(t, "st-broken", fstest.Minimal)
	_, err = m.CreateFromTemplate(ctx, spec)
	if err == nil {
		t.Fatal("restore from a truncated state file succeeded")
	}
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), "restore vm st-broken") {
		t.Errorf("error does not say the restore failed: %v", err)
	}
	assertClean(t, m, spec)
}
