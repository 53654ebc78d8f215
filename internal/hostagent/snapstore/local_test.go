package snapstore

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

func TestLocalStore(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	// A staging leftover from a crash is removed on open.
	os.MkdirAll(filepath.Join(root, stagingDir, "snap-000000000000-dead"), 0o700)
	s, err := NewLocal(root)
	if err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, stagingDir)); len(ents) != 0 {
		t.Fatalf("staging leftovers kept: %v", ents)
	}
	const sid = "snap-0123456789ab"
	if _, err := s.Get(ctx, sid); !errdefs.IsNotFound(err) {
		t.Fatalf("Get missing = %v", err)
	}
	dir, err := s.Staging(ctx, sid)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "mem.state"), make([]byte, 8192), 0o600)
	m, err := s.Put(ctx, Meta{SnapshotID: sid, SandboxID: "sb-00000001", MemoryMB: 256, CreatedAt: time.Now(), AccessToken: "t"}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Location != "local:"+filepath.Join(root, sid) {
		t.Fatalf("location %q", m.Location)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("Put did not take the staging dir")
	}
	st, _ := os.Stat(filepath.Join(root, sid, MetaFile))
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("meta mode %v", st.Mode().Perm())
	}
	got, err := s.Get(ctx, sid)
	if err != nil || got.SandboxID != "sb-00000001" || got.AccessToken != "t" {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	odir, om, release, err := s.Open(ctx, sid)
	if err != nil || om.MemoryMB != 256 {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(odir, "mem.state")); err != nil {
		t.Fatal(err)
	}
	release()
	if s.UsedBytes() < 8192 {
		t.Fatalf("UsedBytes = %d", s.UsedBytes())
	}

	// A second Put of the same ID is refused and leaves the new dir alone.
	dir2, _ := s.Staging(ctx, sid)
	if _, err := s.Put(ctx, Meta{SnapshotID: sid}, dir2); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second Put = %v", err)
	}
	if err := s.Discard(dir2); err != nil {
		t.Fatal(err)
	}
	if err := s.Discard("/etc"); err == nil {
		t.Fatal("Discard outside staging must fail")
	}

	list, err := s.List(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("List = %v, %v", list, err)
	}
	if err := s.Delete(ctx, sid); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, sid); err != nil {
		t.Fatalf("second Delete = %v", err)
	}
	if list, _ := s.List(ctx); len(list) != 0 {
		t.Fatalf("List after delete = %v", list)
	}
	if _, err := s.Staging(ctx, "../x"); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("bad id: %v", err)
	}
}
