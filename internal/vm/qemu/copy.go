package qemu

import (
	"context"

	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem"
)

// Ways CloneFile copied a file.
const (
	CopyReflink = string(filesystem.Reflink)
	CopySparse  = string(filesystem.SparseCopy)
)

// CloneFile copies src to dst (created or replaced) with
// filesystem.Clone: a FICLONE reflink where the filesystem supports it
// (btrfs, XFS), otherwise a copy of only the data regions so holes stay
// holes. It returns which method was used.
func CloneFile(src, dst string) (string, error) {
	m, err := filesystem.Clone(context.Background(), src, dst)
	return string(m), err
}

// statBlocks returns the bytes allocated to a file.
func statBlocks(path string) (int64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}
