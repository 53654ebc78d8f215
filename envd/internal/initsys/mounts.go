package initsys

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// mountSpec is one filesystem envd mounts at boot. Target is relative to the
// root that mountAll is given.
type mountSpec struct {
	Source   string
	Target   string
	FSType   string
	Flags    uintptr
	Data     string
	Mode     os.FileMode // mode of the target directory when created
	Optional bool        // failure is logged, not returned
}

const (
	nosuid = unix.MS_NOSUID
	nodev  = unix.MS_NODEV
	noexec = unix.MS_NOEXEC
)

// bootMounts is what a PID-1 envd mounts, in order (parents first).
func bootMounts() []mountSpec {
	return []mountSpec{
		{Source: "proc", Target: "/proc", FSType: "proc", Flags: nosuid | nodev | noexec, Mode: 0o555},
		{Source: "sysfs", Target: "/sys", FSType: "sysfs", Flags: nosuid | nodev | noexec, Mode: 0o555},
		{Source: "devtmpfs", Target: "/dev", FSType: "devtmpfs", Flags: nosuid, Data: "mode=0755", Mode: 0o755},
		{Source: "devpts", Target: "/dev/pts", FSType: "devpts", Flags: nosuid | noexec,
			Data: "newinstance,ptmxmode=0666,mode=0620,gid=5", Mode: 0o755},
		{Source: "shm", Target: "/dev/shm", FSType: "tmpfs", Flags: nosuid | nodev, Data: "mode=1777", Mode: 0o1777},
		{Source: "tmpfs", Target: "/tmp", FSType: "tmpfs", Flags: nosuid | nodev, Data: "mode=1777", Mode: 0o1777},
		{Source: "tmpfs", Target: "/run", FSType: "tmpfs", Flags: nosuid | nodev, Data: "mode=0755", Mode: 0o755},
		{Source: "cgroup2", Target: "/sys/fs/cgroup", FSType: "cgroup2", Flags: nosuid | nodev | noexec,
			Mode: 0o555, Optional: true},
	}
}

// mountEntry is one line of /proc/<pid>/mountinfo.
type mountEntry struct {
	MountPoint string
	FSType     string
	Source     string
	Options    string // per-mount options (rw,nosuid,...)
	SuperOpts  string // per-superblock options (mode=620,gid=5,...)
}

// parseMountinfo reads the mountinfo format (proc(5)):
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// Optional fields end at the lone "-". Paths are octal-escaped.
func parseMountinfo(r io.Reader) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 6 || sep < 0 || len(f) < sep+3 {
			return nil, fmt.Errorf("mountinfo: malformed line %q", sc.Text())
		}
		e := mountEntry{
			MountPoint: unescapeOctal(f[4]),
			Options:    f[5],
			FSType:     f[sep+1],
			Source:     unescapeOctal(f[sep+2]),
		}
		if len(f) > sep+3 {
			e.SuperOpts = f[sep+3]
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	return out, nil
}

// unescapeOctal undoes the kernel's \ooo escaping of space, tab, newline
// and backslash in mountinfo paths.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// findMount returns the last (topmost) mount at target.
func findMount(table []mountEntry, target string) (mountEntry, bool) {
	target = filepath.Clean(target)
	for i := len(table) - 1; i >= 0; i-- {
		if table[i].MountPoint == target {
			return table[i], true
		}
	}
	return mountEntry{}, false
}

// readMountTable reads the mount table at path. A missing file (proc not
// mounted yet) is an empty table: nothing under /proc can be mounted then.
func readMountTable(path string) ([]mountEntry, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	return parseMountinfo(f)
}

// mounter mounts specs under root, skipping targets that the mount table
// at mountinfo already lists. The table is re-read before each mount, so
// the first read after proc is mounted sees what an initramfs moved in.
type mounter struct {
	log       *slog.Logger
	root      string
	mountinfo string
}

func (m mounter) mountAll(specs []mountSpec) error {
	var errs []error
	for _, s := range specs {
		if err := m.mountOne(s); err != nil {
			if s.Optional {
				m.log.Warn("optional mount failed", "target", s.Target, "err", err)
				continue
			}
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (m mounter) mountOne(s mountSpec) error {
	target := filepath.Join(m.root, s.Target)
	table, err := readMountTable(m.mountinfo)
	if err != nil {
		return err
	}
	if e, ok := findMount(table, target); ok {
		m.log.Debug("already mounted", "target", target, "fstype", e.FSType)
		return nil
	}
	if err := os.MkdirAll(target, s.Mode.Perm()|os.ModeDir); err != nil {
		return fmt.Errorf("mkdir %s: %w", target, err)
	}
	err = unix.Mount(s.Source, target, s.FSType, s.Flags, s.Data)
	if err != nil && s.FSType == "devtmpfs" {
		// A kernel without CONFIG_DEVTMPFS: fall back to a tmpfs with the
		// few nodes a sandbox needs.
		m.log.Warn("devtmpfs unavailable, using tmpfs with static nodes", "err", err)
		if err = unix.Mount("tmpfs", target, "tmpfs", s.Flags, s.Data); err == nil {
			err = makeStaticNodes(target)
		}
	}
	if err != nil {
		return fmt.Errorf("mount %s on %s: %w", s.FSType, target, err)
	}
	m.log.Debug("mounted", "target", target, "fstype", s.FSType)
	return nil
}

// staticNodes are the device nodes created when devtmpfs is missing.
var staticNodes = []struct {
	name         string
	mode         uint32
	major, minor uint32
}{
	{"null", 0o666, 1, 3}, {"zero", 0o666, 1, 5}, {"full", 0o666, 1, 7},
	{"random", 0o666, 1, 8}, {"urandom", 0o666, 1, 9},
	{"tty", 0o666, 5, 0}, {"console", 0o600, 5, 1}, {"ptmx", 0o666, 5, 2},
	{"kmsg", 0o644, 1, 11},
}

func makeStaticNodes(dev string) error {
	var errs []error
	for _, n := range staticNodes {
		p := filepath.Join(dev, n.name)
		if err := unix.Mknod(p, unix.S_IFCHR|n.mode, int(unix.Mkdev(n.major, n.minor))); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("mknod %s: %w", p, err))
			continue
		}
		// mknod applies the umask; set the intended mode.
		_ = unix.Chmod(p, n.mode)
	}
	return errors.Join(errs...)
}
