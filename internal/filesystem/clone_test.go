package filesystem_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem/fstest"
)

// writeSparse writes a file of size bytes with data only at the given
// offsets (each extent 8 KiB of a repeating pattern) and returns it.
func writeSparse(t testing.TB, path string, size int64, offsets ...int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for i, off := range offsets {
		if _, err := f.WriteAt(bytes.Repeat([]byte{byte('a' + i), 0x5a}, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
}

func sameContent(t testing.TB, a, b string) {
	t.Helper()
	da, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	db, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(da, db) {
		t.Fatalf("%s and %s differ (%d and %d bytes)", a, b, len(da), len(db))
	}
}

// noTempFiles fails if Clone left a work file in dir.
func noTempFiles(t testing.TB, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".clone-") {
			t.Errorf("work file left behind: %s", e.Name())
		}
	}
}

func TestCloneCopiesAndKeepsHoles(t *testing.T) {
	dir := t.TempDir()
	reflink, err := filesystem.SupportsReflink(dir)
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "src.img")
	const size = 64 << 20
	writeSparse(t, src, size, 0, 1<<20, 40<<20+512, size-8192)
	if err := os.Chmod(src, 0o640); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "dst.img")
	// An existing destination is replaced, not appended to.
	if err := os.WriteFile(dst, bytes.Repeat([]byte("old"), 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := filesystem.Clone(context.Background(), src, dst)
	if err != nil {
		t.Fatal(err)
	}
	want := filesystem.SparseCopy
	if reflink {
		want = filesystem.Reflink
	}
	if m != want {
		t.Errorf("method %s, want %s (reflink supported here: %v)", m, want, reflink)
	}
	sameContent(t, src, dst)
	st, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != size || st.Mode().Perm() != 0o640 {
		t.Errorf("dst size %d mode %v, want %d 0640", st.Size(), st.Mode().Perm(), size)
	}
	alloc, err := filesystem.AllocatedBytes(dst)
	if err != nil {
		t.Fatal(err)
	}
	if !reflink && alloc > 1<<20 {
		t.Errorf("sparse copy allocated %d bytes for 32 KiB of data: holes were filled", alloc)
	}
	noTempFiles(t, dir)
}

func TestCloneErrors(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.img")
	writeSparse(t, src, 1<<20, 0)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name     string
		ctx      context.Context
		src, dst string
		want     string
	}{
		{"missing source", context.Background(), filepath.Join(dir, "nope"), filepath.Join(dir, "a"), "no such file"},
		{"source is a directory", context.Background(), dir, filepath.Join(dir, "b"), "not a regular file"},
		{"destination directory missing", context.Background(), src, filepath.Join(dir, "no", "c"), "no such file"},
		{"cancelled", cancelled, src, filepath.Join(dir, "d"), "context canceled"},
		{"onto itself", context.Background(), src, src, "is the source"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "cancelled" {
				if ok, _ := filesystem.SupportsReflink(dir); ok {
					t.Skip("a reflink does not copy, so there is nothing to cancel")
				}
			}
			_, err := filesystem.Clone(tc.ctx, tc.src, tc.dst)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one mentioning %q", err, tc.want)
			}
			if tc.dst == tc.src {
				if st, err := os.Stat(src); err != nil || st.Size() != 1<<20 {
					t.Errorf("source damaged: %v", err)
				}
			} else if _, err := os.Stat(tc.dst); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("destination exists after a failed clone: %v", err)
			}
			noTempFiles(t, dir)
		})
	}
}

func TestRemoveIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "clone.img")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := filesystem.Remove(p); err != nil {
			t.Fatalf("remove #%d: %v", i+1, err)
		}
	}
	if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("still there: %v", err)
	}
	// A directory that is not empty is a real error, not "already gone".
	sub := filepath.Join(dir, "sub")
	if err := os.MkdirAll(filepath.Join(sub, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := filesystem.Remove(sub); err == nil {
		t.Fatal("removing a non-empty directory succeeded")
	}
}

// TestCloneReflink needs a filesystem with shared extents: it makes an XFS
// image, loop-mounts it for the test and unmounts it afterwards.
func TestCloneReflink(t *testing.T) {
	dir := fstest.ReflinkDir(t)
	src := filepath.Join(dir, "src.img")
	writeSparse(t, src, 256<<20, 0, 100<<20)
	// Give the source real data so a copy would show in the free space.
	f, err := os.OpenFile(src, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{7}, 32<<20), 8<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	freeBefore := freeBytes(t, dir)
	dst := filepath.Join(dir, "dst.img")
	m, err := filesystem.Clone(context.Background(), src, dst)
	if err != nil {
		t.Fatal(err)
	}
	if m != filesystem.Reflink {
		t.Fatalf("method %s on XFS with reflink=1, want reflink", m)
	}
	if used := freeBefore - freeBytes(t, dir); used > 4<<20 {
		t.Errorf("reflink used %d bytes of space for 32 MiB of shared data", used)
	}
	sameContent(t, src, dst)
	// Writing the clone must not change the source.
	g, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.WriteAt([]byte("changed"), 8<<20); err != nil {
		t.Fatal(err)
	}
	g.Close()
	b := make([]byte, 7)
	s, _ := os.Open(src)
	defer s.Close()
	if _, err := s.ReadAt(b, 8<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, bytes.Repeat([]byte{7}, 7)) {
		t.Fatalf("source changed through its clone: %q", b)
	}
}

// freeBytes is the free space of the filesystem holding dir.
func freeBytes(t testing.TB, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}
