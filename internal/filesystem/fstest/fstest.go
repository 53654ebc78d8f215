// Package fstest has test helpers for code that clones images: a
// directory on a reflink-capable filesystem. Test-only; production code
// must not import it.
package fstest

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ReflinkDir returns a directory on a freshly made XFS filesystem with
// reflink=1 (an image file loop-mounted for the test, unmounted and
// deleted by t.Cleanup). It skips the test, saying why, when that cannot be
// done here: not root, no mkfs.xfs (apt-get install xfsprogs), or no loop
// device. For tests and benchmarks only.
func ReflinkDir(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("reflink test filesystem: needs root to loop-mount an XFS image")
	}
	mkfs, err := exec.LookPath("mkfs.xfs")
	if err != nil {
		t.Skip("reflink test filesystem: mkfs.xfs not installed (apt-get install xfsprogs)")
	}
	work := t.TempDir()
	img := filepath.Join(work, "xfs.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	// Sparse: only what the tests write takes space.
	if err := f.Truncate(4 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, mkfs, "-q", "-m", "reflink=1", img).CombinedOutput(); err != nil {
		t.Skipf("reflink test filesystem: mkfs.xfs failed: %v: %s", err, bytes.TrimSpace(out))
	}
	mnt := filepath.Join(work, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, "mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("reflink test filesystem: loop mount failed (no loop devices here?): %v: %s", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		// Lazy unmount if something still holds it; the loop device is
		// released with the last reference (mount -o loop set autoclear).
		if err := unix.Unmount(mnt, 0); err != nil {
			_ = unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return mnt
}
