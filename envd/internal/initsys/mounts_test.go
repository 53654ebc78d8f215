package initsys

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseMountinfo(t *testing.T) {
	in := `22 27 0:21 / /proc rw,relatime - proc proc rw
24 27 0:6 / /dev rw,relatime shared:2 master:1 - devtmpfs devtmpfs rw,size=12334524k,mode=755
26 24 0:24 / /dev/pts rw,relatime - devpts devpts rw,mode=600,ptmxmode=000
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
99 27 0:50 /sub /mnt/with\040space\134x rw - tmpfs my\040src rw
100 27 0:51 / /mnt/nosuper rw - tmpfs none
`
	got, err := parseMountinfo(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []mountEntry{
		{MountPoint: "/proc", FSType: "proc", Source: "proc", Options: "rw,relatime", SuperOpts: "rw"},
		{MountPoint: "/dev", FSType: "devtmpfs", Source: "devtmpfs", Options: "rw,relatime", SuperOpts: "rw,size=12334524k,mode=755"},
		{MountPoint: "/dev/pts", FSType: "devpts", Source: "devpts", Options: "rw,relatime", SuperOpts: "rw,mode=600,ptmxmode=000"},
		{MountPoint: "/", FSType: "ext4", Source: "/dev/vda", Options: "rw,relatime", SuperOpts: "rw,discard"},
		{MountPoint: `/mnt/with space\x`, FSType: "tmpfs", Source: "my src", Options: "rw", SuperOpts: "rw"},
		{MountPoint: "/mnt/nosuper", FSType: "tmpfs", Source: "none", Options: "rw"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parseMountinfo =\n%+v\nwant\n%+v", got, want)
	}

	for _, bad := range []string{
		"22 27 0:21 / /proc rw,relatime proc proc rw\n", // no separator
		"22 27 0:21 / /proc rw - proc\n",                // separator without type and source
		"1 2 3\n",
	} {
		if _, err := parseMountinfo(strings.NewReader(bad)); err == nil {
			t.Errorf("parseMountinfo(%q) succeeded", bad)
		}
	}
}

func TestFindMount(t *testing.T) {
	table := []mountEntry{
		{MountPoint: "/", FSType: "ext4"},
		{MountPoint: "/dev", FSType: "devtmpfs"},
		{MountPoint: "/dev", FSType: "tmpfs"}, // mounted over: topmost wins
	}
	tests := []struct {
		target string
		want   string
		ok     bool
	}{
		{"/dev", "tmpfs", true},
		{"/dev/", "tmpfs", true},
		{"/", "ext4", true},
		{"/dev/pts", "", false},
		{"/de", "", false},
	}
	for _, tt := range tests {
		e, ok := findMount(table, tt.target)
		if ok != tt.ok || e.FSType != tt.want {
			t.Errorf("findMount(%q) = %q, %v; want %q, %v", tt.target, e.FSType, ok, tt.want, tt.ok)
		}
	}
}

func TestReadMountTableMissingIsEmpty(t *testing.T) {
	table, err := readMountTable(filepath.Join(t.TempDir(), "nope"))
	if err != nil || table != nil {
		t.Fatalf("readMountTable(missing) = %v, %v; want nil, nil", table, err)
	}
	table, err = readMountTable("/proc/thread-self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := findMount(table, "/"); !ok {
		t.Fatal("real mount table has no /")
	}
}

// inMountNamespace runs fn on a locked thread that has its own mount
// namespace with every mount private, so nothing fn mounts is seen by, or
// propagates to, the host. The thread is never unlocked: it exits with the
// goroutine and the namespace, with its mounts, is freed.
func inMountNamespace(t *testing.T, fn func() error) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a mount namespace")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			errc <- fmt.Errorf("unshare mount namespace: %w", err)
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			errc <- fmt.Errorf("make mounts private: %w", err)
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// testMounts is bootMounts with devtmpfs replaced by a tmpfs: a devtmpfs
// mount is the host's own /dev superblock, and the links made in it would
// appear on the host.
func testMounts() []mountSpec {
	specs := bootMounts()
	for i := range specs {
		if specs[i].FSType == "devtmpfs" {
			specs[i].FSType, specs[i].Source = "tmpfs", "devtmpfs-standin"
		}
	}
	return specs
}

func TestMountAllInNamespace(t *testing.T) {
	root := t.TempDir()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	inMountNamespace(t, func() error {
		m := mounter{log: log, root: root, mountinfo: "/proc/thread-self/mountinfo"}
		// Something already mounted at /run (as an initramfs would leave
		// it) must be kept, not mounted over.
		if err := os.MkdirAll(filepath.Join(root, "run"), 0o755); err != nil {
			return err
		}
		if err := unix.Mount("premounted", filepath.Join(root, "run"), "tmpfs", 0, "size=1m"); err != nil {
			return fmt.Errorf("premount /run: %w", err)
		}
		var counts []int
		for range 2 {
			if err := m.mountAll(testMounts()); err != nil {
				return err
			}
			table, err := readMountTable(m.mountinfo)
			if err != nil {
				return err
			}
			n := 0
			for _, e := range table {
				if strings.HasPrefix(e.MountPoint, root+"/") {
					n++
				}
			}
			counts = append(counts, n)
		}
		if want := len(testMounts()); counts[0] != want || counts[1] != want {
			return fmt.Errorf("mounts under root after first and second run = %v, want %d each (idempotent)", counts, want)
		}
		table, err := readMountTable(m.mountinfo)
		if err != nil {
			return err
		}
		for _, s := range testMounts() {
			e, ok := findMount(table, filepath.Join(root, s.Target))
			if !ok || e.FSType != s.FSType {
				return fmt.Errorf("%s: mounted %v (%q), want %s", s.Target, ok, e.FSType, s.FSType)
			}
		}
		if e, _ := findMount(table, filepath.Join(root, "run")); e.Source != "premounted" {
			return fmt.Errorf("/run was mounted over: %+v", e)
		}
		pts, _ := findMount(table, filepath.Join(root, "dev/pts"))
		for _, opt := range []string{"gid=5", "mode=620", "ptmxmode=666"} {
			if !strings.Contains(","+pts.SuperOpts+",", ","+opt+",") {
				return fmt.Errorf("devpts options %q lack %s", pts.SuperOpts, opt)
			}
		}
		if proc, _ := findMount(table, filepath.Join(root, "proc")); !strings.Contains(proc.Options, "nosuid") || !strings.Contains(proc.Options, "noexec") {
			return fmt.Errorf("proc options %q lack nosuid,noexec", proc.Options)
		}
		for _, dir := range []string{"tmp", "dev/shm"} {
			fi, err := os.Stat(filepath.Join(root, dir))
			if err != nil {
				return err
			}
			if fi.Mode()&os.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
				return fmt.Errorf("%s mode %v, want 1777", dir, fi.Mode())
			}
		}
		// The new proc really is a proc.
		if _, err := os.Stat(filepath.Join(root, "proc/self/mountinfo")); err != nil {
			return fmt.Errorf("mounted proc unusable: %w", err)
		}

		dev := filepath.Join(root, "dev")
		if err := makeDevLinks(dev); err != nil {
			return err
		}
		if err := makeDevLinks(dev); err != nil {
			return fmt.Errorf("second makeDevLinks: %w", err)
		}
		for name, want := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx"} {
			if got, err := os.Readlink(filepath.Join(dev, name)); err != nil || got != want {
				return fmt.Errorf("dev/%s -> %q (%v), want %q", name, got, err, want)
			}
		}
		// The ptmx link must lead to a usable multiplexer of the new devpts.
		fd, err := unix.Open(filepath.Join(dev, "ptmx"), unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open dev/ptmx: %w", err)
		}
		unix.Close(fd)

		// The fallback for kernels without devtmpfs, on our private tmpfs.
		if err := makeStaticNodes(dev); err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dev, "null"), &st); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) || st.Mode&0o777 != 0o666 {
			return fmt.Errorf("dev/null mode %o rdev %x", st.Mode, st.Rdev)
		}
		return nil
	})
}

func TestMountAllReportsFailures(t *testing.T) {
	root := t.TempDir()
	inMountNamespace(t, func() error {
		m := mounter{log: slog.New(slog.DiscardHandler), root: root, mountinfo: "/proc/thread-self/mountinfo"}
		err := m.mountAll([]mountSpec{
			{Source: "x", Target: "/bad", FSType: "nosuchfs", Mode: 0o755},
			{Source: "x", Target: "/opt", FSType: "nosuchfs", Mode: 0o755, Optional: true},
			{Source: "t", Target: "/good", FSType: "tmpfs", Mode: 0o755},
		})
		if err == nil || !strings.Contains(err.Error(), "/bad") || strings.Contains(err.Error(), "/opt") {
			return fmt.Errorf("mountAll error = %v, want only the required /bad failure", err)
		}
		if !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("mountAll error %v does not wrap ENODEV", err)
		}
		table, _ := readMountTable(m.mountinfo)
		if _, ok := findMount(table, filepath.Join(root, "good")); !ok {
			return errors.New("a failure stopped the later mounts")
		}
		return nil
	})
}
