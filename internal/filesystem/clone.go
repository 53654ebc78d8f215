package filesystem

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Method is how Clone copied a file.
type Method string

// Clone methods.
const (
	// Reflink: the copy shares the source's extents (FICLONE; btrfs, XFS
	// with reflink=1, bcachefs); it takes no time and no space until
	// either file is written.
	Reflink Method = "reflink"
	// SparseCopy: only the data regions (SEEK_DATA/SEEK_HOLE) were copied,
	// in the kernel where copy_file_range works; holes stay holes.
	SparseCopy Method = "sparse-copy"
)

// copyChunk bounds one copy_file_range call, so a cancelled context is
// noticed within about that much copying.
const copyChunk = 64 << 20

// Clone makes dst a copy of the regular file src, sharing extents where the
// filesystem can (reflink) and otherwise copying only its data regions. The
// copy is written under a temporary name in dst's directory and renamed over
// dst when complete, so dst is either absent, its old self, or a full copy,
// never a partial one; on error nothing new is left. Cloning onto an
// existing dst replaces it. dst gets src's permission bits.
func Clone(ctx context.Context, src, dst string) (Method, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("clone %s: %w", src, err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return "", fmt.Errorf("clone %s: %w", src, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("clone %s: not a regular file", src)
	}
	if dst == "" || filepath.Clean(dst) == filepath.Clean(src) {
		return "", fmt.Errorf("clone %s: destination %q is the source or empty", src, dst)
	}
	tmp, err := tempName(dst)
	if err != nil {
		return "", err
	}
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, st.Mode().Perm())
	if err != nil {
		return "", fmt.Errorf("clone to %s: %w", dst, err)
	}
	method := Reflink
	err = unix.IoctlFileClone(int(out.Fd()), int(in.Fd()))
	if err != nil {
		// EOPNOTSUPP/EINVAL (no shared extents here), EXDEV (another
		// filesystem), ENOTTY: fall back. A real I/O problem shows up
		// again in the copy.
		method = SparseCopy
		err = sparseCopy(ctx, out, in, st.Size())
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("clone %s to %s: %w", src, dst, err)
	}
	return method, nil
}

// tempName is a fresh name next to dst for Clone's work file.
func tempName(dst string) (string, error) {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("clone to %s: %w", dst, err)
	}
	return filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".clone-"+hex.EncodeToString(b[:])), nil
}

// Remove deletes a clone. A missing file is not an error, so Remove can be
// called again after a crash or a partial cleanup.
func Remove(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove clone %s: %w", path, err)
	}
	return nil
}

// sparseCopy copies the data extents of in into out, which is first sized
// to size so everything not copied is a hole.
func sparseCopy(ctx context.Context, out, in *os.File, size int64) error {
	if err := out.Truncate(size); err != nil {
		return err
	}
	var off int64
	for off < size {
		data, err := unix.Seek(int(in.Fd()), off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole remains
		}
		if err != nil {
			return fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(int(in.Fd()), data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		if err := copyRange(ctx, out, in, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// copyRange copies n bytes at off, in the kernel where possible.
func copyRange(ctx context.Context, out, in *os.File, off, n int64) error {
	for n > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		roff, woff := off, off
		c, err := unix.CopyFileRange(int(in.Fd()), &roff, int(out.Fd()), &woff, int(min(n, copyChunk)), 0)
		if err != nil || c == 0 {
			// copy_file_range refused (old kernel, odd filesystem):
			// plain read/write for the rest of this extent.
			r := io.NewSectionReader(in, off, n)
			if _, cerr := io.Copy(io.NewOffsetWriter(out, off), &ctxReader{ctx: ctx, r: r}); cerr != nil {
				return fmt.Errorf("copy data: %w", cerr)
			}
			return nil
		}
		off += int64(c)
		n -= int64(c)
	}
	return nil
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r *ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// AllocatedBytes is the disk space a file occupies (a sparse file counts
// only its data; reflinked extents count in full for each file).
func AllocatedBytes(path string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Blocks * 512, nil
}

// SupportsReflink reports whether files in dir can be reflinked, by trying
// it on two small temporary files.
func SupportsReflink(dir string) (bool, error) {
	a, err := os.CreateTemp(dir, ".reflink-probe-")
	if err != nil {
		return false, fmt.Errorf("probe reflink in %s: %w", dir, err)
	}
	defer os.Remove(a.Name())
	defer a.Close()
	if _, err := a.Write(make([]byte, 4096)); err != nil {
		return false, fmt.Errorf("probe reflink in %s: %w", dir, err)
	}
	b, err := os.CreateTemp(dir, ".reflink-probe-")
	if err != nil {
		return false, fmt.Errorf("probe reflink in %s: %w", dir, err)
	}
	defer os.Remove(b.Name())
	defer b.Close()
	return unix.IoctlFileClone(int(b.Fd()), int(a.Fd())) == nil, nil
}
