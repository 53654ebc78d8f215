package jailer

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Layout is a jail on the host: <base>/<exec_file_name>/<id>/root. Every
// path Firecracker is given through the API is resolved inside Root.
type Layout struct {
	InstanceDir string // <base>/<exec>/<id>: what the caller removes afterwards
	Root        string // the chroot
	ExecName    string
	UID, GID    int
}

// APISocket is the host path of Firecracker's API socket in the jail.
func (l Layout) APISocket() string { return l.HostPath(APISocketInJail) }

// PIDFile is the file the jailer writes Firecracker's pid to (needed with
// --new-pid-ns or --daemonize, where it differs from the jailer's pid).
func (l Layout) PIDFile() string { return filepath.Join(l.Root, l.ExecName+".pid") }

// HostPath maps a path as Firecracker sees it to the host.
func (l Layout) HostPath(jailPath string) string {
	return filepath.Join(l.Root, filepath.Clean("/"+jailPath))
}

// JailPath maps a host path under Root to the path Firecracker sees.
func (l Layout) JailPath(hostPath string) (string, error) {
	rel, err := filepath.Rel(l.Root, hostPath)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("%s is outside the jail %s", hostPath, l.Root)
	}
	return "/" + rel, nil
}

// Create makes the chroot and its /run, owned by uid:gid where the jailed
// process must write.
func (l Layout) Create() error {
	if err := os.MkdirAll(l.HostPath("/run"), 0o755); err != nil {
		return fmt.Errorf("create jail %s: %w", l.Root, err)
	}
	if err := os.Lchown(l.HostPath("/run"), l.UID, l.GID); err != nil {
		return fmt.Errorf("chown jail /run: %w", err)
	}
	return nil
}

// Remove detaches any mount under the instance directory and deletes it
// (hard links in it only drop a name; the caller's files stay).
// Idempotent.
func (l Layout) Remove() error {
	if l.InstanceDir == "" {
		return nil
	}
	for _, m := range mountsUnder(l.InstanceDir) {
		_ = unix.Unmount(m, unix.MNT_DETACH)
	}
	if err := os.RemoveAll(l.InstanceDir); err != nil {
		return fmt.Errorf("remove jail %s: %w", l.InstanceDir, err)
	}
	return nil
}

// Place puts the host file src into the jail as jailPath: a hard link when
// both are on one filesystem, else a (sparse-preserving) copy. It returns
// the path Firecracker must be given. An existing target is replaced.
//
// With writable the file is the VM's own disk: the VM's writes must reach
// src, so across filesystems it is bind-mounted instead of copied (the
// jailer's own MS_BIND|MS_REC of the chroot keeps such mounts visible), and
// it is chowned to uid:gid so the jailed process can open it read-write. A
// hard link shares the inode, so that changes the owner of src too: fine
// for a per-VM rootfs clone, wrong for a kernel shared by VMs with
// different uids (read-only files are not chowned; keep them world
// readable).
func (l Layout) Place(src, jailPath string, writable bool) (string, error) {
	dst := l.HostPath(jailPath)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", fmt.Errorf("place %s: %w", src, err)
	}
	_ = unix.Unmount(dst, unix.MNT_DETACH)
	_ = os.Remove(dst)
	err := os.Link(src, dst)
	if errors.Is(err, syscall.EXDEV) {
		if writable {
			err = bindFile(src, dst)
		} else {
			err = copyFile(src, dst)
		}
	}
	if err != nil {
		return "", fmt.Errorf("place %s in jail: %w", src, err)
	}
	if writable {
		if err := os.Chown(dst, l.UID, l.GID); err != nil {
			return "", fmt.Errorf("chown %s: %w", dst, err)
		}
	}
	return filepath.Clean("/" + jailPath), nil
}

// Touch creates an empty file (log, metrics) in the jail for uid:gid.
func (l Layout) Touch(jailPath string) (string, error) {
	dst := l.HostPath(jailPath)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", err
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return "", err
	}
	_ = f.Close()
	if err := os.Chown(dst, l.UID, l.GID); err != nil {
		return "", err
	}
	return filepath.Clean("/" + jailPath), nil
}

// bindFile bind-mounts src over a new empty file dst.
func bindFile(src, dst string) error {
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_ = f.Close()
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		_ = os.Remove(dst)
		return fmt.Errorf("bind mount %s: %w", src, err)
	}
	return nil
}

// mountsUnder lists mount points below dir, deepest first.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	prefix := filepath.Clean(dir) + "/"
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if strings.HasPrefix(mp, prefix) {
			out = append(out, mp)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// copyFile copies src to a new dst keeping holes (the zero runs of a disk
// image are skipped with Seek instead of written).
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fi.Mode().Perm())
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for {
		n, rerr := io.ReadFull(in, buf)
		if n > 0 {
			if allZero(buf[:n]) {
				_, err = out.Seek(int64(n), io.SeekCurrent)
			} else {
				_, err = out.Write(buf[:n])
			}
			if err != nil {
				_ = out.Close()
				return err
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			_ = out.Close()
			return rerr
		}
	}
	if err := out.Truncate(fi.Size()); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
