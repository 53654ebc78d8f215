package firecracker

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fcapi"
)

const (
	rootDriveID = "rootfs"
	ifaceID     = "eth0"
)

// bootArgs is the kernel command line: the base arguments, the static
// ip= for eth0 when the VM has a network, then the caller's arguments.
func (d *Driver) bootArgs(spec vm.Spec) string {
	parts := []string{d.cfg.BootArgs}
	if spec.Net != nil {
		parts = append(parts, "ip="+kernelIP(d.cfg.GuestCIDR, d.cfg.Gateway))
	}
	if spec.KernelArgs != "" {
		parts = append(parts, spec.KernelArgs)
	}
	return strings.Join(parts, " ")
}

// kernelIP renders the kernel's static ip= value:
// <client>::<gateway>:<netmask>::eth0:off.
func kernelIP(cidr, gateway string) string {
	ip, n, err := net.ParseCIDR(cidr)
	if err != nil { // checked in New
		return "off"
	}
	return fmt.Sprintf("%s::%s:%s::%s:off", ip, gateway, net.IP(n.Mask), ifaceID)
}

// boot runs the documented sequence: logger, metrics, boot-source, drives,
// machine-config, network-interfaces, vsock, entropy, InstanceStart.
func (d *Driver) boot(ctx context.Context, in *instance) error {
	spec, p, api := in.spec, in.paths, in.api
	if err := d.observe(ctx, in); err != nil {
		return err
	}
	steps := []struct {
		name string
		run  func() error
	}{
		{"boot-source", func() error {
			return api.PutBootSource(ctx, fcapi.BootSource{KernelImagePath: p.kernelFC, InitrdPath: p.initrdFC, BootArgs: d.bootArgs(spec)})
		}},
		{"rootfs drive", func() error {
			return api.PutDrive(ctx, fcapi.Drive{DriveID: rootDriveID, PathOnHost: p.rootfsFC, IsRootDevice: true, IsReadOnly: fcapi.Bool(false)})
		}},
		{"machine-config", func() error {
			return api.PutMachineConfig(ctx, fcapi.MachineConfig{VCPUCount: spec.VCPUs, MemSizeMib: spec.MemoryMB, TrackDirtyPages: d.cfg.TrackDirtyPages})
		}},
		{"network interface", func() error {
			if spec.Net == nil {
				return nil
			}
			return api.PutNetworkInterface(ctx, fcapi.NetworkInterface{IfaceID: ifaceID, HostDevName: spec.Net.TapName, GuestMAC: spec.Net.MAC})
		}},
		{"vsock", func() error { return api.PutVsock(ctx, fcapi.Vsock{GuestCID: guestCID, UDSPath: p.vsockFC}) }},
		{"entropy", func() error { return api.PutEntropy(ctx, fcapi.Entropy{}) }},
		{"instance start", func() error { return api.InstanceStart(ctx) }},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

// observe sets up Firecracker's log and metrics files (not kept in
// snapshots, so a restore sets them again).
func (d *Driver) observe(ctx context.Context, in *instance) error {
	p := in.paths
	if err := in.api.PutLogger(ctx, fcapi.Logger{LogPath: p.logFC, Level: d.cfg.LogLevel, ShowLevel: true}); err != nil {
		return fmt.Errorf("logger: %w", err)
	}
	if err := in.api.PutMetrics(ctx, fcapi.Metrics{MetricsPath: p.metricsFC}); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}
