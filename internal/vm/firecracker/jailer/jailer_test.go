package jailer

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func TestValidateID(t *testing.T) {
	cases := []struct {
		id string
		ok bool
	}{
		{"sbx-1", true},
		{"A1-b2", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"", false},
		{"has_underscore", false},
		{"has space", false},
		{"dot.dot", false},
		{"../x", false},
		{"é", false},
	}
	for _, tc := range cases {
		if err := ValidateID(tc.id); (err == nil) != tc.ok {
			t.Errorf("ValidateID(%q) = %v", tc.id, err)
		}
	}
}

func TestArgs(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		fc   []string
		want []string
		bad  bool
	}{
		{name: "minimal", cfg: Config{ID: "vm1", ExecFile: "/usr/bin/firecracker", UID: 100, GID: 101},
			want: []string{"--id", "vm1", "--exec-file", "/usr/bin/firecracker", "--uid", "100", "--gid", "101", "--chroot-base-dir", "/srv/jailer"}},
		{name: "everything", cfg: Config{
			ID: "vm1", ExecFile: "/opt/fc/firecracker", UID: 1, GID: 2, ChrootBaseDir: "/var/jail", NetNS: "/var/run/netns/sbx",
			CgroupVersion: 2, Cgroups: []string{"cpu.max=50000 100000", "memory.max=536870912"}, ParentCgroup: "wrenn",
			ResourceLimits: []string{"no-file=4096", "fsize=1073741824"}, Daemonize: true, NewPIDNS: true,
		}, fc: []string{"--api-sock", "/run/firecracker.socket"}, want: []string{
			"--id", "vm1", "--exec-file", "/opt/fc/firecracker", "--uid", "1", "--gid", "2", "--chroot-base-dir", "/var/jail",
			"--netns", "/var/run/netns/sbx", "--cgroup-version", "2", "--cgroup", "cpu.max=50000 100000", "--cgroup", "memory.max=536870912",
			"--parent-cgroup", "wrenn", "--resource-limit", "no-file=4096", "--resource-limit", "fsize=1073741824",
			"--daemonize", "--new-pid-ns", "--", "--api-sock", "/run/firecracker.socket",
		}},
		{name: "bad id", cfg: Config{ID: "a_b", ExecFile: "/fc"}, bad: true},
		{name: "relative exec", cfg: Config{ID: "a", ExecFile: "firecracker"}, bad: true},
		{name: "bad cgroup version", cfg: Config{ID: "a", ExecFile: "/fc", CgroupVersion: 3}, bad: true},
		{name: "bad cgroup", cfg: Config{ID: "a", ExecFile: "/fc", Cgroups: []string{"cpu.max"}}, bad: true},
		{name: "bad resource limit", cfg: Config{ID: "a", ExecFile: "/fc", ResourceLimits: []string{"nproc=5"}}, bad: true},
		{name: "bad resource value", cfg: Config{ID: "a", ExecFile: "/fc", ResourceLimits: []string{"fsize=big"}}, bad: true},
		{name: "negative uid", cfg: Config{ID: "a", ExecFile: "/fc", UID: -1}, bad: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.cfg.Args(tc.fc...)
			if tc.bad {
				if err == nil {
					t.Fatalf("accepted: %v", got)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %q %v\nwant %q", got, err, tc.want)
			}
		})
	}
}

func TestLayoutPaths(t *testing.T) {
	c := Config{ID: "vm-7", ExecFile: "/opt/bin/firecracker-v1.16", ChrootBaseDir: "/srv/j", ParentCgroup: "wrenn"}
	l, err := c.Layout()
	if err != nil {
		t.Fatal(err)
	}
	checks := map[string]string{
		l.InstanceDir:                  "/srv/j/firecracker-v1.16/vm-7",
		l.Root:                         "/srv/j/firecracker-v1.16/vm-7/root",
		l.APISocket():                  "/srv/j/firecracker-v1.16/vm-7/root/run/firecracker.socket",
		l.PIDFile():                    "/srv/j/firecracker-v1.16/vm-7/root/firecracker-v1.16.pid",
		l.HostPath("/rootfs.ext4"):     "/srv/j/firecracker-v1.16/vm-7/root/rootfs.ext4",
		l.HostPath("../../etc/passwd"): "/srv/j/firecracker-v1.16/vm-7/root/etc/passwd",
		c.CgroupDir("/sys/fs/cgroup"):  "/sys/fs/cgroup/wrenn/vm-7",
	}
	for got, want := range checks {
		if got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
	if p, err := l.JailPath(l.Root + "/snapshot/mem"); err != nil || p != "/snapshot/mem" {
		t.Errorf("JailPath: %q %v", p, err)
	}
	if _, err := l.JailPath("/srv/j/firecracker-v1.16/vm-8/root/x"); err == nil {
		t.Error("JailPath accepted a path outside the jail")
	}
}

func ino(t *testing.T, p string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestPlaceAndRemove(t *testing.T) {
	base := t.TempDir()
	c := Config{ID: "vm1", ExecFile: "/usr/bin/firecracker", UID: os.Getuid(), GID: os.Getgid(), ChrootBaseDir: base}
	l, err := c.Layout()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Create(); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(base, "rootfs.ext4")
	if err := os.WriteFile(src, []byte("disk"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := l.Place(src, "/rootfs.ext4", true)
	if err != nil || p != "/rootfs.ext4" {
		t.Fatalf("place: %q %v", p, err)
	}
	if ino(t, src) != ino(t, l.HostPath(p)) {
		t.Fatal("same filesystem: want a hard link")
	}
	if p, err := l.Touch("/firecracker.log"); err != nil || p != "/firecracker.log" {
		t.Fatalf("touch: %q %v", p, err)
	}

	// Across filesystems (/dev/shm is a tmpfs): a read-only file is copied,
	// a writable one bind-mounted so the VM's writes reach the source.
	shm, err := os.MkdirTemp("/dev/shm", "jailer-test")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	defer os.RemoveAll(shm)
	far := filepath.Join(shm, "kernel")
	if err := os.WriteFile(far, []byte("vmlinux"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Place(far, "/vmlinux", false); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(l.HostPath("/vmlinux")); string(b) != "vmlinux" || ino(t, far) == ino(t, l.HostPath("/vmlinux")) {
		t.Fatal("cross-device read-only file: want a copy")
	}
	disk := filepath.Join(shm, "disk")
	if err := os.WriteFile(disk, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if _, err := l.Place(disk, "/data.ext4", true); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(l.HostPath("/data.ext4"), []byte("new"), 0o644); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(disk); string(b) != "new" {
			t.Fatalf("write through the jail did not reach the source: %q", b)
		}
	}
	if err := l.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := l.Remove(); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := os.Stat(l.InstanceDir); !os.IsNotExist(err) {
		t.Fatalf("instance dir still there: %v", err)
	}
	for _, f := range []string{src, disk} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("source %s removed with the jail: %v", f, err)
		}
	}
	if b, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(b), l.InstanceDir) {
		t.Fatal("a mount under the jail survived Remove")
	}
}
