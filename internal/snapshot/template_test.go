package snapshot

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem/fstest"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/qemu"
)

// TestCreateFromTemplate makes two sandboxes from one template at once:
// the snapshot is built once, each sandbox runs on its own disk, and each
// got its own /init (token enforced, env var, hostname, clock).
func TestCreateFromTemplate(t *testing.T) {
	reg := fstest.MinimalRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	m := testManager(t, reg)

	type box struct {
		name  string
		spec  CreateSpec
		clock time.Duration // offset of the /init timestamp from now
		sb    *Sandbox
		err   error
	}
	boxes := []*box{
		{name: "a"},
		{name: "b", clock: time.Hour},
	}
	var wg sync.WaitGroup
	for _, b := range boxes {
		b.spec = sandboxSpec(t, "st-two-"+b.name, fstest.Minimal)
		b.spec.Init = envdclient.InitRequest{
			AccessToken: "token-" + b.name,
			EnvVars:     map[string]string{"WRENN_BOX": b.name},
			Hostname:    "box-" + b.name,
		}
		if b.clock != 0 {
			b.spec.Init.Timestamp = time.Now().Add(b.clock)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.sb, b.err = m.CreateFromTemplate(ctx, b.spec)
		}()
	}
	wg.Wait()
	for _, b := range boxes {
		if b.err != nil {
			t.Fatalf("create %s: %v", b.name, b.err)
		}
		t.Cleanup(func() { b.sb.Destroy(context.Background()) })
		t.Logf("sandbox %s: %+v", b.name, b.sb.Timings)
	}
	if n := m.Built(); n != 1 {
		t.Fatalf("two concurrent creates built the snapshot %d times, want 1", n)
	}
	tmpl := boxes[0].sb.Template
	if boxes[1].sb.Template.Dir != tmpl.Dir {
		t.Fatalf("sandboxes restored from different snapshots: %s and %s", tmpl.Dir, boxes[1].sb.Template.Dir)
	}
	tmplSum, err := sha(tmpl.Rootfs())
	if err != nil {
		t.Fatal(err)
	}
	// The QEMU driver backs template RAM with a file that every sandbox
	// maps copy-on-write: the snapshot must use it, and no sandbox's
	// writes may reach it (they would leak into the others).
	ramFile := filepath.Join(tmpl.Dir, MemoryFile)
	qmeta, err := qemu.ReadSnapshotMeta(tmpl.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if !tmpl.Key.MemoryFile || qmeta.MemoryFile != MemoryFile {
		t.Fatalf("template snapshot does not use its RAM file: key %v, snapshot.json memory_file %q", tmpl.Key.MemoryFile, qmeta.MemoryFile)
	}
	ramSum, err := sha(ramFile)
	if err != nil {
		t.Fatal(err)
	}

	// Each writes its own file while both run, and dirties 32 MiB of its
	// RAM (page cache of a tmpfs-free guest: a file read back from memory).
	for _, b := range boxes {
		sh(t, ctx, b.sb.Envd, fmt.Sprintf("echo %s > /root/own-%s; sync", b.name, b.name))
		sh(t, ctx, b.sb.Envd, fmt.Sprintf("head -c 33554432 /dev/zero | tr '\\0' %s > /root/fill; sync", b.name))
	}
	for _, b := range boxes {
		out := sh(t, ctx, b.sb.Envd, "tr -d "+b.name+" < /root/fill | wc -c; rm /root/fill")
		if strings.TrimSpace(out) != "0" {
			t.Errorf("sandbox %s reads back %s bytes of its RAM-cached file that are not its own", b.name, strings.TrimSpace(out))
		}
	}
	for _, b := range boxes {
		c := b.sb.Envd
		t.Run("init applied in "+b.name, func(t *testing.T) {
			out := strings.Fields(sh(t, ctx, c, `echo "$WRENN_BOX"; hostname; date +%s`))
			if len(out) != 3 {
				t.Fatalf("guest said %q", out)
			}
			if out[0] != b.name || out[1] != "box-"+b.name {
				t.Errorf("env var %q hostname %q, want %q %q", out[0], out[1], b.name, "box-"+b.name)
			}
			guest, _ := strconv.ParseInt(out[2], 10, 64)
			want := time.Now().Add(b.clock).Unix()
			if d := guest - want; d < -10 || d > 10 {
				t.Errorf("guest clock %d is %d s off the /init timestamp %d", guest, d, want)
			}
		})
		t.Run("token required in "+b.name, func(t *testing.T) {
			anon := envdclient.New(b.sb.Instance, envdclient.Options{})
			defer anon.Close()
			_, err := anon.Shell(ctx, "true", 10*time.Second)
			if connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Errorf("exec without the token: %v, want unauthenticated", err)
			}
			wrong := envdclient.New(b.sb.Instance, envdclient.Options{AccessToken: "token-x"})
			defer wrong.Close()
			if _, err := wrong.Shell(ctx, "true", 10*time.Second); connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Errorf("exec with another sandbox's token: %v, want unauthenticated", err)
			}
		})
		t.Run("own disk in "+b.name, func(t *testing.T) {
			out := sh(t, ctx, c, "ls /root")
			for _, o := range boxes {
				has := strings.Contains(out, "own-"+o.name)
				if has != (o == b) {
					t.Errorf("sandbox %s lists /root as %q", b.name, out)
				}
			}
		})
	}
	if sum, err := sha(tmpl.Rootfs()); err != nil || sum != tmplSum {
		t.Errorf("template rootfs changed while sandboxes ran (%v)", err)
	}
	if sum, err := sha(ramFile); err != nil || sum != ramSum {
		t.Errorf("template RAM file changed while sandboxes ran (%v)", err)
	}

	for _, b := range boxes {
		h := b.sb.Instance.Handle()
		if err := b.sb.Destroy(ctx); err != nil {
			t.Fatal(err)
		}
		if err := b.sb.Destroy(ctx); err != nil {
			t.Fatalf("second destroy: %v", err)
		}
		if pids := qemuFor(h.ID); len(pids) > 0 {
			t.Errorf("qemu of %s still running: %v", h.ID, pids)
		}
		if _, err := os.Stat(b.spec.Rootfs); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("rootfs clone of %s left: %v", b.name, err)
		}
		if left := leftovers(b.spec.RunDir, func(string, fs.DirEntry) bool { return false }); len(left) > 0 {
			t.Errorf("left in run dir of %s: %v", b.name, left)
		}
	}

	t.Run("cache survives the manager", func(t *testing.T) {
		m2 := testManager(t, reg, func(c *Config) { c.CacheDir = m.cfg.CacheDir })
		spec := sandboxSpec(t, "st-two-c", fstest.Minimal)
		sb, err := m2.CreateFromTemplate(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		defer sb.Destroy(ctx)
		if m2.Built() != 0 || sb.Template.Dir != tmpl.Dir {
			t.Errorf("second manager built %d snapshots (dir %s, want %s)", m2.Built(), sb.Template.Dir, tmpl.Dir)
		}
		if out := sh(t, ctx, sb.Envd, "ls /root"); strings.Contains(out, "own-") {
			t.Errorf("a new sandbox sees files of destroyed ones: %q", out)
		}
	})
}

func sha(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%x", sha256.Sum256(b)), nil
}
