// Package jailer builds the command line of Firecracker's jailer and the
// chroot layout it expects: where the jail is on the host, how a host file
// is placed inside it (hard link, or a copy across filesystems) and what
// path Firecracker sees for it. It starts nothing; the driver does. It has
// only been checked against the jailer's documented behaviour, not run.
package jailer

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultChrootBase is the jailer's default --chroot-base-dir.
const DefaultChrootBase = "/srv/jailer"

// APISocketInJail is where Firecracker's default API socket lands inside
// the jail (the jailer creates /run and chowns it to uid:gid).
const APISocketInJail = "/run/firecracker.socket"

// Config is one jailer invocation.
type Config struct {
	ID             string // --id: alphanumerics and '-', at most 64 characters
	ExecFile       string // --exec-file: the firecracker binary (copied into the jail)
	UID, GID       int
	ChrootBaseDir  string   // --chroot-base-dir; DefaultChrootBase when empty
	NetNS          string   // --netns: path of a network namespace to join
	CgroupVersion  int      // --cgroup-version 1|2; omitted when 0 (jailer default 1)
	Cgroups        []string // --cgroup <file>=<value>, repeated
	ParentCgroup   string   // --parent-cgroup
	ResourceLimits []string // --resource-limit fsize=N|no-file=N, repeated
	Daemonize      bool     // --daemonize: setsid, stdio to /dev/null
	NewPIDNS       bool     // --new-pid-ns: firecracker's pid differs from the jailer's
}

// ValidateID checks a jailer --id.
func ValidateID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("jailer id %q: must be 1 to 64 characters", id)
	}
	for _, r := range id {
		if !(r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return fmt.Errorf("jailer id %q: only alphanumerics and '-' are allowed", id)
		}
	}
	return nil
}

func (c Config) validate() error {
	if err := ValidateID(c.ID); err != nil {
		return err
	}
	if c.ExecFile == "" || !filepath.IsAbs(c.ExecFile) {
		return fmt.Errorf("jailer exec file %q: an absolute path is required", c.ExecFile)
	}
	if c.UID < 0 || c.GID < 0 {
		return errors.New("jailer uid and gid must not be negative")
	}
	if c.CgroupVersion != 0 && c.CgroupVersion != 1 && c.CgroupVersion != 2 {
		return fmt.Errorf("jailer cgroup version %d: must be 1 or 2", c.CgroupVersion)
	}
	for _, cg := range c.Cgroups {
		if k, _, ok := strings.Cut(cg, "="); !ok || k == "" {
			return fmt.Errorf("jailer cgroup %q: want <file>=<value>", cg)
		}
	}
	for _, rl := range c.ResourceLimits {
		k, v, ok := strings.Cut(rl, "=")
		if !ok || (k != "fsize" && k != "no-file") {
			return fmt.Errorf("jailer resource limit %q: want fsize=N or no-file=N", rl)
		}
		if _, err := strconv.ParseUint(v, 10, 64); err != nil {
			return fmt.Errorf("jailer resource limit %q: %w", rl, err)
		}
	}
	return nil
}

// Args is the jailer's argv (without argv[0]): its own flags, then `--` and
// the arguments for firecracker.
func (c Config) Args(firecrackerArgs ...string) ([]string, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	a := []string{
		"--id", c.ID,
		"--exec-file", c.ExecFile,
		"--uid", strconv.Itoa(c.UID),
		"--gid", strconv.Itoa(c.GID),
		"--chroot-base-dir", c.chrootBase(),
	}
	if c.NetNS != "" {
		a = append(a, "--netns", c.NetNS)
	}
	if c.CgroupVersion != 0 {
		a = append(a, "--cgroup-version", strconv.Itoa(c.CgroupVersion))
	}
	for _, cg := range c.Cgroups {
		a = append(a, "--cgroup", cg)
	}
	if c.ParentCgroup != "" {
		a = append(a, "--parent-cgroup", c.ParentCgroup)
	}
	for _, rl := range c.ResourceLimits {
		a = append(a, "--resource-limit", rl)
	}
	if c.Daemonize {
		a = append(a, "--daemonize")
	}
	if c.NewPIDNS {
		a = append(a, "--new-pid-ns")
	}
	if len(firecrackerArgs) > 0 {
		a = append(a, "--")
		a = append(a, firecrackerArgs...)
	}
	return a, nil
}

func (c Config) chrootBase() string {
	if c.ChrootBaseDir == "" {
		return DefaultChrootBase
	}
	return c.ChrootBaseDir
}

// Layout is where this jail lives on the host.
func (c Config) Layout() (Layout, error) {
	if err := c.validate(); err != nil {
		return Layout{}, err
	}
	exec := filepath.Base(c.ExecFile)
	instance := filepath.Join(c.chrootBase(), exec, c.ID)
	return Layout{InstanceDir: instance, Root: filepath.Join(instance, "root"), ExecName: exec, UID: c.UID, GID: c.GID}, nil
}

// CgroupDir is the cgroup the jailer creates for this VM under base
// (/sys/fs/cgroup for v2); the caller removes it after the VM.
func (c Config) CgroupDir(base string) string {
	parent := c.ParentCgroup
	if parent == "" {
		parent = filepath.Base(c.ExecFile)
	}
	return filepath.Join(base, parent, c.ID)
}
