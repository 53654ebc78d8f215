package firecracker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/jailer"
)

// Files the driver creates in a VM's RunDir (or jail).
const (
	apiSockName    = "firecracker.sock"
	vsockName      = "v.sock"
	logName        = "firecracker.log"
	metricsName    = "metrics.json"
	consoleName    = "console.log" // firecracker's stdout/stderr: the serial console
	rootfsLinkName = "rootfs.ext4"
	jailVsock      = "/run/v.sock"
)

// vmPaths says where one VM's files are on the host and how Firecracker
// (possibly chrooted, possibly in its own mount namespace) must name them.
type vmPaths struct {
	mode       RootfsMode
	runDir     string
	apiSock    string // host path of the API socket
	apiSockArg string // --api-sock value
	vsockHost  string
	vsockFC    string
	kernelFC   string
	initrdFC   string
	rootfsHost string // the file the VM writes (for the snapshot copy)
	rootfsFC   string // path_on_host
	logHost    string
	logFC      string
	metricsHst string
	metricsFC  string
	console    string
	ns         nsSetup
	jail       *jailer.Layout
	jailCfg    *jailer.Config
}

// paths computes where everything goes for spec. It creates nothing.
func (d *Driver) paths(spec vm.Spec) (*vmPaths, error) {
	p := &vmPaths{mode: d.cfg.RootfsMode, runDir: spec.RunDir, console: filepath.Join(spec.RunDir, consoleName)}
	if d.cfg.Jailer != nil {
		jc := d.cfg.Jailer.config(spec, d.cfg.Firecracker)
		l, err := jc.Layout()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", vm.ErrInvalidSpec, err)
		}
		p.mode, p.jail, p.jailCfg = rootfsJail, &l, &jc
		p.apiSock, p.apiSockArg = l.APISocket(), jailer.APISocketInJail
		p.vsockFC, p.vsockHost = jailVsock, l.HostPath(jailVsock)
		p.kernelFC = "/vmlinux"
		if spec.Initrd != "" {
			p.initrdFC = "/initrd"
		}
		p.rootfsFC, p.rootfsHost = "/"+rootfsLinkName, l.HostPath("/"+rootfsLinkName)
		p.logFC, p.logHost = "/"+logName, l.HostPath("/"+logName)
		p.metricsFC, p.metricsHst = "/"+metricsName, l.HostPath("/"+metricsName)
		return p, nil
	}
	p.apiSock = filepath.Join(spec.RunDir, apiSockName)
	p.apiSockArg = p.apiSock
	p.vsockHost = filepath.Join(spec.RunDir, vsockName)
	p.vsockFC = p.vsockHost
	p.kernelFC, p.initrdFC = spec.Kernel, spec.Initrd
	p.rootfsHost = spec.Rootfs
	p.logHost, p.logFC = filepath.Join(spec.RunDir, logName), filepath.Join(spec.RunDir, logName)
	p.metricsHst, p.metricsFC = filepath.Join(spec.RunDir, metricsName), filepath.Join(spec.RunDir, metricsName)
	if spec.Net != nil {
		p.ns.netNS = spec.Net.NetNS
	}
	switch d.cfg.RootfsMode {
	case RootfsPrivateMount:
		p.rootfsFC = filepath.Join(d.cfg.DriveDir, rootfsLinkName)
		p.ns.privateMnt, p.ns.driveDir = true, d.cfg.DriveDir
		p.ns.links = map[string]string{rootfsLinkName: spec.Rootfs}
	case RootfsDirect:
		p.rootfsFC = spec.Rootfs
	default:
		return nil, fmt.Errorf("unknown rootfs mode %q", d.cfg.RootfsMode)
	}
	return p, nil
}

// prepare creates what must exist before the VMM starts: stale sockets
// removed (Firecracker exits with AddrInUse otherwise), log and metrics
// files (Firecracker opens, never creates, them), the jail with its files,
// the mount point of the private drive directory.
func (p *vmPaths) prepare(spec vm.Spec) error {
	for _, s := range []string{p.apiSock, p.vsockHost} {
		if err := os.Remove(s); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove stale socket: %w", err)
		}
	}
	if p.jail != nil {
		if err := p.jail.Create(); err != nil {
			return err
		}
		if _, err := p.jail.Place(spec.Kernel, p.kernelFC, false); err != nil {
			return err
		}
		if spec.Initrd != "" {
			if _, err := p.jail.Place(spec.Initrd, p.initrdFC, false); err != nil {
				return err
			}
		}
		if _, err := p.jail.Place(spec.Rootfs, p.rootfsFC, true); err != nil {
			return err
		}
		for _, f := range []string{p.logFC, p.metricsFC} {
			if _, err := p.jail.Touch(f); err != nil {
				return fmt.Errorf("create %s in jail: %w", f, err)
			}
		}
		return nil
	}
	if p.ns.privateMnt {
		if err := os.MkdirAll(p.ns.driveDir, 0o755); err != nil {
			return fmt.Errorf("create drive dir: %w", err)
		}
	}
	for _, f := range []string{p.logHost, p.metricsHst} {
		fh, err := os.OpenFile(f, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("create %s: %w", f, err)
		}
		_ = fh.Close()
	}
	return nil
}

// cleanup removes everything prepare and the VMM created. Idempotent.
func (p *vmPaths) cleanup() error {
	var errs []error
	for _, f := range []string{p.apiSock, p.vsockHost, p.logHost, p.metricsHst, p.console} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	// Guest-initiated vsock listeners live next to the UDS as <uds>_<port>.
	if m, _ := filepath.Glob(p.vsockHost + "_*"); len(m) > 0 {
		for _, f := range m {
			_ = os.Remove(f)
		}
	}
	if p.jail != nil {
		if err := p.jail.Remove(); err != nil {
			errs = append(errs, err)
		}
		if p.jailCfg != nil && p.jailCfg.CgroupVersion == 2 {
			_ = os.Remove(p.jailCfg.CgroupDir("/sys/fs/cgroup")) // rmdir; fails harmlessly if busy or absent
		}
	}
	return errors.Join(errs...)
}

// toFC maps a host path (a snapshot file) to the path Firecracker sees. In
// a jail the file must be inside it; the caller stages it there.
func (p *vmPaths) toFC(host string) (string, error) {
	if p.jail == nil {
		return host, nil
	}
	return p.jail.JailPath(host)
}

// firecrackerArgs are the VMM's own arguments. Under the jailer they go
// after `--`; the jailer adds --id itself.
func (p *vmPaths) firecrackerArgs(id string) []string {
	if p.jail != nil {
		return []string{"--api-sock", p.apiSockArg}
	}
	return []string{"--api-sock", p.apiSockArg, "--id", id}
}
