package filesystem

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/envd/internal/entry"
)

// moveAcross moves src to dst when they are on different filesystems. The
// tree is copied to a hidden temporary name beside dst, that copy is renamed
// onto dst (so rename(2)'s rules for an existing destination still apply),
// and only then is src removed. On failure the partial copy is deleted and
// src is untouched.
func moveAcross(ctx context.Context, src, dst string) error {
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".move-"+randomID()[:12])
	if err := copyTree(ctx, src, tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	if err := os.RemoveAll(src); err != nil {
		return fmt.Errorf("remove source after copy: %w", err)
	}
	return nil
}

// copyTree copies src to dst (which must not exist) without following
// symlinks, keeping owner, mode, modification time and user.e2b.* metadata.
func copyTree(ctx context.Context, src, dst string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	fi, err := os.Lstat(src)
	if err != nil {
		return err
	}
	mode := fi.Mode()
	switch {
	case mode.IsRegular():
		err = copyFile(src, dst)
	case mode.IsDir():
		err = copyDir(ctx, src, dst)
	case mode&fs.ModeSymlink != 0:
		var target string
		if target, err = os.Readlink(src); err == nil {
			err = os.Symlink(target, dst)
		}
	default:
		return connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("%q: cannot move a special file across filesystems", src))
	}
	if err != nil {
		return err
	}
	return copyAttrs(src, dst, fi)
}

func copyDir(ctx context.Context, src, dst string) error {
	if err := os.Mkdir(dst, 0o700); err != nil {
		return err
	}
	des, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, de := range des {
		if err := copyTree(ctx, filepath.Join(src, de.Name()), filepath.Join(dst, de.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

// copyAttrs gives dst the owner, mode, mtime and metadata of src. The mode
// is set after chown, which clears setuid/setgid bits.
func copyAttrs(src, dst string, fi fs.FileInfo) error {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if err := os.Lchown(dst, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
	}
	if md := entry.ReadMetadata(src); len(md) > 0 {
		_ = entry.ReplaceMetadata(dst, md) // best effort: the target may lack xattrs
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return nil
	}
	perm := fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	if err := os.Chmod(dst, perm); err != nil {
		return err
	}
	return os.Chtimes(dst, fi.ModTime(), fi.ModTime())
}
