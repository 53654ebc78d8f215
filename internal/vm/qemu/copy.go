package qemu

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Ways CloneFile copied a file.
const (
	CopyReflink = "reflink"
	CopySparse  = "sparse-copy"
)

// CloneFile copies src to dst (created or truncated), sharing extents with
// a FICLONE reflink where the filesystem supports it (btrfs, XFS) and
// otherwise copying only the data regions so holes stay holes. It returns
// which method was used.
func CloneFile(src, dst string) (string, error) {
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
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, st.Mode().Perm())
	if err != nil {
		return "", fmt.Errorf("clone to %s: %w", dst, err)
	}
	method := CopyReflink
	err = unix.IoctlFileClone(int(out.Fd()), int(in.Fd()))
	if err != nil {
		method = CopySparse
		err = sparseCopy(out, in, st.Size())
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return "", fmt.Errorf("clone %s to %s: %w", src, dst, err)
	}
	return method, nil
}

// sparseCopy copies the data extents of in (found with SEEK_DATA and
// SEEK_HOLE) into out, which is sized to size so the rest stays a hole.
func sparseCopy(out, in *os.File, size int64) error {
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
		if err := copyRange(out, in, data, hole-data); err != nil {
			return err
		}
		off = hole
	}
	return nil
}

// copyRange copies n bytes at off, in-kernel where possible.
func copyRange(out, in *os.File, off, n int64) error {
	for n > 0 {
		roff, woff := off, off
		c, err := unix.CopyFileRange(int(in.Fd()), &roff, int(out.Fd()), &woff, int(min(n, 1<<30)), 0)
		if err != nil || c == 0 {
			// Fall back to a plain read/write copy of what is left.
			_, cerr := io.Copy(io.NewOffsetWriter(out, off), io.NewSectionReader(in, off, n))
			if cerr != nil {
				return fmt.Errorf("copy data: %w", cerr)
			}
			return nil
		}
		off += int64(c)
		n -= int64(c)
	}
	return nil
}

// statBlocks returns the bytes allocated to a file.
func statBlocks(path string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}
