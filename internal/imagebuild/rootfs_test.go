package imagebuild

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// debootstrapLikeTree makes a tree like debootstrap leaves: system accounts,
// a sudo group, resolv.conf as a symlink.
func debootstrapLikeTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin",
		"etc/group":  "root:x:0:\ndaemon:x:1:\nsudo:x:27:\n",
		"etc/shadow": "root:*:19000:0:99999:7:::\n",
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/run/systemd/resolve/stub-resolv.conf", filepath.Join(dir, "etc/resolv.conf")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestFinishAccounts(t *testing.T) {
	envd := filepath.Join(t.TempDir(), "envd")
	if err := os.WriteFile(envd, []byte("#!/bin/sh\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		spec   FinishSpec
		passwd []string // lines that must be present exactly once
		group  []string
	}{
		{"sudo group exists", FinishSpec{Envd: envd, Shell: "/bin/bash", UserGroups: []string{"sudo"}},
			[]string{"root:x:0:0:root:/root:/bin/bash", "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin", "user:x:1000:1000::/home/user:/bin/bash"},
			[]string{"sudo:x:27:user", "user:x:1000:", "daemon:x:1:"}},
		{"group created", FinishSpec{Envd: envd, UserGroups: []string{"wheel", "sudo"}},
			[]string{"user:x:1000:1000::/home/user:/bin/sh"},
			[]string{"wheel:x:900:user", "sudo:x:27:user"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := debootstrapLikeTree(t)
			// Twice: Finish must be idempotent.
			for i := 0; i < 2; i++ {
				if err := Finish(dir, tt.spec); err != nil {
					t.Fatal(err)
				}
			}
			check := func(file string, want []string) {
				data, err := os.ReadFile(filepath.Join(dir, file))
				if err != nil {
					t.Fatal(err)
				}
				lines := strings.Split(strings.TrimSpace(string(data)), "\n")
				for _, w := range want {
					n := 0
					for _, l := range lines {
						if l == w {
							n++
						}
					}
					if n != 1 {
						t.Errorf("%s: %q present %d times in:\n%s", file, w, n, data)
					}
				}
			}
			check("etc/passwd", tt.passwd)
			check("etc/group", tt.group)
			check("etc/shadow", []string{"user:*:19000:0:99999:7:::"})
			if st, err := os.Lstat(filepath.Join(dir, "etc/resolv.conf")); err != nil || !st.Mode().IsRegular() {
				t.Errorf("resolv.conf not replaced by a file: %v %v", st, err)
			}
			st, err := os.Stat(filepath.Join(dir, EnvdPath))
			if err != nil || st.Mode().Perm() != 0o755 {
				t.Fatalf("envd not installed 0755: %v %v", st, err)
			}
			if st, err := os.Stat(filepath.Join(dir, "tmp")); err != nil || st.Mode()&os.ModeSticky == 0 {
				t.Errorf("tmp not sticky: %v %v", st, err)
			}
			if os.Geteuid() == 0 {
				st, err := os.Stat(filepath.Join(dir, "home/user"))
				if err != nil {
					t.Fatal(err)
				}
				if uid := statUID(st); uid != SandboxUID {
					t.Errorf("home owned by %d", uid)
				}
			}
		})
	}
}

func TestFinishNeedsEnvd(t *testing.T) {
	if err := Finish(t.TempDir(), FinishSpec{}); err == nil {
		t.Fatal("Finish without envd succeeded")
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`:   "/a b",
		`/plain`:    "/plain",
		`/x\134y`:   `/x\y`,
		`/bad\09`:   `/bad\09`,
		`/end\04`:   `/end\04`,
		`/tab\011z`: "/tab\tz",
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWorkDirMountCheck(t *testing.T) {
	if err := checkNoMounts("/proc"); !errors.Is(err, ErrMountsInWorkDir) {
		t.Fatalf("/proc (a mount point): %v", err)
	}
	if err := checkNoMounts("/"); !errors.Is(err, ErrMountsInWorkDir) {
		t.Fatalf("/ (has mounts below): %v", err)
	}
	dir := filepath.Join(t.TempDir(), "work")
	if err := os.MkdirAll(filepath.Join(dir, "a/b"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := removeWorkDir(dir); err != nil {
		t.Fatalf("plain dir: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("dir not removed: %v", err)
	}
}

func statUID(st os.FileInfo) int {
	return int(st.Sys().(*syscall.Stat_t).Uid)
}

func TestParseFinishOptions(t *testing.T) {
	tests := []struct {
		in   string
		want finishOptions
		ok   bool
	}{
		{"", finishOptions{SizeMiB: 256, Shell: "/bin/sh"}, true},
		{"size_mib=2048\nshell=/bin/bash\nuser_groups=sudo, wheel\n# c\n", finishOptions{SizeMiB: 2048, Shell: "/bin/bash", UserGroups: []string{"sudo", "wheel"}}, true},
		{"size_mib=8", finishOptions{}, false},
		{"size_mib=big", finishOptions{}, false},
		{"shell=bash", finishOptions{}, false},
		{"colour=blue", finishOptions{}, false},
		{"nonsense", finishOptions{}, false},
	}
	for _, tt := range tests {
		got, err := parseFinishOptions(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("parseFinishOptions(%q) error %v, want ok=%v", tt.in, err, tt.ok)
			continue
		}
		if tt.ok && (got.SizeMiB != tt.want.SizeMiB || got.Shell != tt.want.Shell ||
			strings.Join(got.UserGroups, ",") != strings.Join(tt.want.UserGroups, ",")) {
			t.Errorf("parseFinishOptions(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}
