package imagebuild

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// EnvdPath is where every rootfs carries envd, the program /init runs.
const EnvdPath = "usr/local/bin/envd"

// The sandbox user, as in E2B's images: uid/gid 1000, home /home/user.
const (
	SandboxUser = "user"
	SandboxUID  = 1000
)

// FinishSpec is what every template gets on top of its base tree.
type FinishSpec struct {
	Envd       string   // envd binary (or, in tests, any program to run as init)
	Hostname   string   // default "wrenn"
	Shell      string   // login shell of root and user; default /bin/sh
	UserGroups []string // extra groups for the sandbox user (e.g. sudo), created if missing
	Nameserver string   // resolv.conf nameserver; default 8.8.8.8 (the agent may rewrite it)
}

// StageMinimal lays out the `minimal` base tree in dir: busybox-static with
// its applet links and the directories and /etc files a busybox system
// needs. Follow it with Finish.
func StageMinimal(ctx context.Context, dir, busybox string) error {
	if busybox == "" {
		busybox = DefaultBusybox
	}
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "etc", "var/log", "mnt", "opt"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("stage minimal: %w", err)
		}
	}
	if err := copyFile(busybox, filepath.Join(dir, "bin/busybox"), 0o755); err != nil {
		return fmt.Errorf("stage minimal: %w", err)
	}
	applets, err := BusyboxApplets(ctx, busybox)
	if err != nil {
		return err
	}
	for _, p := range applets {
		dst := filepath.Join(dir, p)
		if p == "bin/busybox" {
			continue
		}
		if _, err := os.Lstat(dst); err == nil {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("stage minimal: %w", err)
		}
		if err := os.Symlink("/bin/busybox", dst); err != nil {
			return fmt.Errorf("stage minimal: %w", err)
		}
	}
	files := map[string]string{
		"etc/passwd":     "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":      "root:x:0:\nnogroup:x:65534:\n",
		"etc/shadow":     "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n",
		"etc/profile":    "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
		"etc/shells":     "/bin/sh\n/bin/ash\n",
		"etc/os-release": "NAME=\"Wrenn minimal\"\nID=wrenn-minimal\nPRETTY_NAME=\"Wrenn minimal (busybox)\"\n",
	}
	for name, content := range files {
		mode := os.FileMode(0o644)
		if name == "etc/shadow" {
			mode = 0o640
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), mode); err != nil {
			return fmt.Errorf("stage minimal: %w", err)
		}
	}
	return nil
}

// Finish adds what every Wrenn rootfs has, whatever its base: the mount
// points envd and /init use, /tmp, the sandbox user and its home, hostname,
// hosts and resolv.conf, and envd at EnvdPath. It edits accounts in place,
// so a debootstrap tree keeps its own system users. Ownership is set only
// when running as root (mkfs.ext4 -d copies owners from the tree).
func Finish(dir string, spec FinishSpec) error {
	if spec.Hostname == "" {
		spec.Hostname = "wrenn"
	}
	if spec.Shell == "" {
		spec.Shell = "/bin/sh"
	}
	if spec.Nameserver == "" {
		spec.Nameserver = "8.8.8.8"
	}
	dirs := []struct {
		name string
		mode os.FileMode
	}{
		{"dev", 0o755}, {"proc", 0o555}, {"sys", 0o555}, {"run", 0o755},
		{"tmp", os.ModeSticky | 0o777}, {"var/tmp", os.ModeSticky | 0o777}, {"root", 0o700}, {"home", 0o755},
		{"etc", 0o755}, {"usr/local/bin", 0o755},
	}
	for _, d := range dirs {
		p := filepath.Join(dir, d.name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("finish rootfs: %w", err)
		}
		if err := os.Chmod(p, d.mode); err != nil {
			return fmt.Errorf("finish rootfs: %w", err)
		}
	}
	if err := ensureAccounts(dir, spec); err != nil {
		return fmt.Errorf("finish rootfs: %w", err)
	}
	home := filepath.Join(dir, "home", SandboxUser)
	if err := os.MkdirAll(home, 0o755); err != nil {
		return fmt.Errorf("finish rootfs: %w", err)
	}
	if os.Geteuid() == 0 {
		if err := os.Chown(home, SandboxUID, SandboxUID); err != nil {
			return fmt.Errorf("finish rootfs: %w", err)
		}
	}
	etc := map[string]string{
		"etc/hostname":    spec.Hostname + "\n",
		"etc/hosts":       "127.0.0.1\tlocalhost\n127.0.1.1\t" + spec.Hostname + "\n::1\tlocalhost ip6-localhost ip6-loopback\n",
		"etc/resolv.conf": "nameserver " + spec.Nameserver + "\n",
	}
	for name, content := range etc {
		p := filepath.Join(dir, name)
		// debootstrap may leave resolv.conf as a copy of the host's or a
		// symlink; either way the guest gets ours.
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("finish rootfs: %w", err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return fmt.Errorf("finish rootfs: %w", err)
		}
	}
	if spec.Envd == "" {
		return fmt.Errorf("finish rootfs: no envd binary given")
	}
	if err := copyFile(spec.Envd, filepath.Join(dir, EnvdPath), 0o755); err != nil {
		return fmt.Errorf("finish rootfs: install envd: %w", err)
	}
	return nil
}

// ensureAccounts makes sure the sandbox user and group exist (uid/gid 1000)
// and that the user is in the extra groups.
func ensureAccounts(dir string, spec FinishSpec) error {
	passwd := filepath.Join(dir, "etc/passwd")
	group := filepath.Join(dir, "etc/group")
	shadow := filepath.Join(dir, "etc/shadow")
	uid := fmt.Sprint(SandboxUID)
	if err := ensureLine(passwd, SandboxUser, SandboxUser+":x:"+uid+":"+uid+"::/home/"+SandboxUser+":"+spec.Shell, 0o644); err != nil {
		return err
	}
	if err := ensureLine(group, SandboxUser, SandboxUser+":x:"+uid+":", 0o644); err != nil {
		return err
	}
	if err := ensureLine(shadow, SandboxUser, SandboxUser+":*:19000:0:99999:7:::", 0o640); err != nil {
		return err
	}
	for _, g := range spec.UserGroups {
		if err := addGroupMember(group, g, SandboxUser); err != nil {
			return err
		}
	}
	return nil
}

// ensureLine appends line to a colon-separated database file unless an
// entry named name is already there.
func ensureLine(file, name, line string, mode os.FileMode) error {
	data, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, name+":") {
			return nil
		}
	}
	if len(data) > 0 && !bytes.HasSuffix(data, []byte("\n")) {
		data = append(data, '\n')
	}
	data = append(data, line+"\n"...)
	return writeKeepMode(file, data, mode)
}

// addGroupMember adds member to group g in an /etc/group file, creating the
// group with a free gid below 1000 if needed.
func addGroupMember(file, g, member string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	used := map[string]bool{}
	found := false
	for i, l := range lines {
		f := strings.Split(l, ":")
		if len(f) < 4 {
			continue
		}
		used[f[2]] = true
		if f[0] != g {
			continue
		}
		found = true
		members := strings.Split(f[3], ",")
		for _, m := range members {
			if m == member {
				return nil
			}
		}
		if f[3] == "" {
			f[3] = member
		} else {
			f[3] += "," + member
		}
		lines[i] = strings.Join(f, ":")
	}
	if !found {
		gid := 900
		for used[fmt.Sprint(gid)] {
			gid++
		}
		lines = append(lines, fmt.Sprintf("%s:x:%d:%s", g, gid, member))
	}
	return writeKeepMode(file, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
}

func writeKeepMode(file string, data []byte, mode os.FileMode) error {
	if st, err := os.Stat(file); err == nil {
		mode = st.Mode().Perm()
	}
	return os.WriteFile(file, data, mode)
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

// MakeExt4 packs dir into a new sparse ext4 image of sizeMiB at out with
// `mkfs.ext4 -d` (e2fsprogs >= 1.43): no mount and no loop device. The root
// directory is owned by root; everything else keeps the owner it has in dir.
func MakeExt4(ctx context.Context, dir, out string, sizeMiB int, label string) error {
	if sizeMiB <= 0 {
		return fmt.Errorf("mkfs %s: size must be positive", out)
	}
	if label == "" {
		label = "rootfs"
	}
	if err := os.Remove(out); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("mkfs %s: %w", out, err)
	}
	f, err := os.OpenFile(out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("mkfs %s: %w", out, err)
	}
	err = f.Truncate(int64(sizeMiB) << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out)
		return fmt.Errorf("mkfs %s: %w", out, err)
	}
	var errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-L", label, "-m", "0",
		"-E", "root_owner=0:0", "-d", dir, out)
	cmd.Stdout, cmd.Stderr = &errb, &errb
	if err := cmd.Run(); err != nil {
		os.Remove(out)
		return fmt.Errorf("mkfs.ext4 -d %s %s: %w: %s", dir, out, err, strings.TrimSpace(errb.String()))
	}
	return nil
}
