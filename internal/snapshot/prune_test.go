package snapshot

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem"
)

// A snapshot stays while its image is current and goes once the template
// is rebuilt (same version, other bits) or its layout is outdated; broken
// directories go too; build work directories are left to the agent.
func TestPruneStale(t *testing.T) {
	ctx := context.Background()
	cache := t.TempDir()
	reg := stubRegistry(t)
	m, err := New(Config{Driver: &stubDriver{}, Images: reg, CacheDir: cache, Warmup: "-", ReadyTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	tmpl, err := m.Ensure(ctx, "t", "")
	if err != nil {
		t.Fatal(err)
	}
	broken := filepath.Join(cache, "t-1-stub-1c512m-000000000000")
	work := filepath.Join(cache, ".build-123")
	for _, d := range []string{broken, work} {
		if err := os.Mkdir(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(broken+".lock", nil, 0o640); err != nil {
		t.Fatal(err)
	}

	removed, err := PruneStale(cache, reg)
	if err != nil || len(removed) != 1 || removed[0] != broken {
		t.Fatalf("first prune removed %v (%v), want only %s", removed, err, broken)
	}
	for _, p := range []string{tmpl.Dir, work} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	if _, err := os.Stat(broken + ".lock"); !os.IsNotExist(err) {
		t.Errorf("lock of the removed dir: %v", err)
	}

	// The template is rebuilt under the same version: its snapshot is stale.
	manifest := filepath.Join(reg.Root(), "templates", "t", "manifest.json")
	if err := os.WriteFile(manifest, []byte(`{"name":"t","version":"1","file":"rootfs.ext4","sha256":"r2"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	reg2, err := filesystem.NewRegistry(reg.Root())
	if err != nil {
		t.Fatal(err)
	}
	removed, err = PruneStale(cache, reg2)
	if err != nil || len(removed) != 1 || removed[0] != tmpl.Dir {
		t.Fatalf("prune after rebuild removed %v (%v), want %s", removed, err, tmpl.Dir)
	}
	if _, err := os.Stat(work); err != nil {
		t.Errorf("build work dir: %v", err)
	}

	// A template gone from the registry, and an older layout.
	for _, mut := range []func(*Template){
		func(t *Template) { t.Key.Template = "gone" },
		func(t *Template) { t.Key.Meta = metaVersion - 1 },
	} {
		m2, err := New(Config{Driver: &stubDriver{}, Images: reg2, CacheDir: cache, Warmup: "-", ReadyTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t2, err := m2.Ensure(ctx, "t", "")
		if err != nil {
			t.Fatal(err)
		}
		mut(t2)
		if err := writeMeta(t2.Dir, t2); err != nil {
			t.Fatal(err)
		}
		if removed, err := PruneStale(cache, reg2); err != nil || len(removed) != 1 || removed[0] != t2.Dir {
			t.Errorf("removed %v (%v), want %s", removed, err, t2.Dir)
		}
	}
	if removed, err := PruneStale(filepath.Join(cache, "none"), reg2); err != nil || len(removed) != 0 {
		t.Errorf("missing cache dir: %v %v", removed, err)
	}
}
