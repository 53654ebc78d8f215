package firecracker

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// cloneFile copies src to a new file dst: a reflink (FICLONE) where the
// filesystem shares extents, else a sparse copy that skips holes with
// SEEK_DATA/SEEK_HOLE (and lets copy_file_range do the data). It returns
// the logical size of dst.
func cloneFile(src, dst string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return 0, err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = out.Close()
			_ = os.Remove(dst)
		}
	}()
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		ok = true
		return fi.Size(), out.Close()
	}
	if err := sparseCopy(in, out, fi.Size()); err != nil {
		return 0, fmt.Errorf("copy %s: %w", src, err)
	}
	if err := out.Sync(); err != nil {
		return 0, err
	}
	ok = true
	return fi.Size(), out.Close()
}

func sparseCopy(in, out *os.File, size int64) error {
	fd := int(in.Fd())
	var off int64
	for off < size {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole is left
		}
		if err != nil { // no SEEK_DATA support: copy everything
			data = off
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = size
		}
		if _, err := in.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := out.Seek(data, io.SeekStart); err != nil {
			return err
		}
		if _, err := out.ReadFrom(io.LimitReader(in, hole-data)); err != nil {
			return err
		}
		off = hole
	}
	return out.Truncate(size)
}

// moveFile renames src to dst, copying across filesystems.
func moveFile(src, dst string) error {
	err := os.Rename(src, dst)
	if !errors.Is(err, unix.EXDEV) {
		return err
	}
	if _, err := cloneFile(src, dst); err != nil {
		return err
	}
	return os.Remove(src)
}
