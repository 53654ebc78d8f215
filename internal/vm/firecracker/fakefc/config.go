package fakefc

import (
	"fmt"
	"net"
	"os"
	"regexp"
	"slices"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fcapi"
)

// Handlers of the boot-time configuration endpoints. Order of checks, as
// in Firecracker: the body is parsed (and path/body ids compared) first,
// then the state machine decides, then the VMM validates values and opens
// files.

var macRE = regexp.MustCompile(`^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$`)

// checkFile opens path like Firecracker opens kernels and disks at PUT.
func checkFile(what, path string) *apiError {
	f, err := os.Open(path)
	if err != nil {
		return badRequest("%s %s cannot be opened: %v", what, path, err)
	}
	_ = f.Close()
	return nil
}

func (v *VMM) putBootSource(body []byte) *apiError {
	var b fcapi.BootSource
	if err := decode(body, bootSourceSchema, &b); err != nil {
		return deserializeError(err)
	}
	if e := v.preBoot(); e != nil {
		return e
	}
	if e := checkFile("The kernel file", b.KernelImagePath); e != nil {
		return e
	}
	if b.InitrdPath != "" {
		if e := checkFile("The initrd file", b.InitrdPath); e != nil {
			return e
		}
	}
	v.bootSource, v.bootConfigured = &b, true
	return nil
}

func (v *VMM) putDrive(id string, body []byte) *apiError {
	var d fcapi.Drive
	if err := decode(body, driveSchema, &d); err != nil {
		return deserializeError(err)
	}
	if d.DriveID != id {
		return badRequest("The id from the path [%s] does not match the id from the body [%s]!", id, d.DriveID)
	}
	if e := v.preBoot(); e != nil {
		return e
	}
	if d.Socket == "" && (d.PathOnHost == "" || d.IsReadOnly == nil) {
		return badRequest("Unable to create the block device: path_on_host and is_read_only are required for a virtio-block drive.")
	}
	if d.CacheType != "" {
		if err := oneOf(d.CacheType, fcapi.CacheUnsafe, fcapi.CacheWriteback); err != nil {
			return deserializeError(err)
		}
	}
	if d.IOEngine != "" {
		if err := oneOf(d.IOEngine, fcapi.IOEngineSync, fcapi.IOEngineAsync); err != nil {
			return deserializeError(err)
		}
	}
	if d.IsRootDevice {
		for _, o := range v.drives {
			if o.IsRootDevice && o.DriveID != d.DriveID {
				return badRequest("A root block device already exists!")
			}
		}
	}
	if d.Socket == "" {
		if e := checkFile("Unable to create the block device: the file", d.PathOnHost); e != nil {
			return e
		}
	}
	v.bootConfigured = true
	i := slices.IndexFunc(v.drives, func(o fcapi.Drive) bool { return o.DriveID == d.DriveID })
	if i >= 0 {
		v.drives[i] = d
		return nil
	}
	// Firecracker keeps the root device first.
	if d.IsRootDevice {
		v.drives = append([]fcapi.Drive{d}, v.drives...)
	} else {
		v.drives = append(v.drives, d)
	}
	return nil
}

func (v *VMM) patchDrive(id string, body []byte) *apiError {
	var d fcapi.PartialDrive
	if err := decode(body, partialDriveSchema, &d); err != nil {
		return deserializeError(err)
	}
	if d.DriveID != id {
		return badRequest("The id from the path [%s] does not match the id from the body [%s]!", id, d.DriveID)
	}
	if e := v.postBoot(); e != nil {
		return e
	}
	i := slices.IndexFunc(v.drives, func(o fcapi.Drive) bool { return o.DriveID == d.DriveID })
	if i < 0 {
		return badRequest("Invalid block device ID: %s", d.DriveID)
	}
	if d.PathOnHost != "" {
		if e := checkFile("Unable to patch the block device: the file", d.PathOnHost); e != nil {
			return e
		}
		v.drives[i].PathOnHost = d.PathOnHost
	}
	if d.RateLimiter != nil {
		v.drives[i].RateLimiter = d.RateLimiter
	}
	return nil
}

func validateMachine(m fcapi.MachineConfig) *apiError {
	switch {
	case m.VCPUCount < 1 || m.VCPUCount > 32:
		return badRequest("The number of vCPUs must be greater than 0, less than 33 and must be 1 or an even number if SMT is enabled.")
	case m.SMT && m.VCPUCount != 1 && m.VCPUCount%2 != 0:
		return badRequest("The number of vCPUs must be greater than 0, less than 33 and must be 1 or an even number if SMT is enabled.")
	case m.MemSizeMib < 1:
		return badRequest("The memory size (MiB) is either 0, or not a multiple of the configured page size.")
	case m.HugePages == fcapi.HugePages2M && m.MemSizeMib%2 != 0:
		return badRequest("The memory size (MiB) is either 0, or not a multiple of the configured page size.")
	}
	if m.HugePages != "" {
		if err := oneOf(m.HugePages, fcapi.HugePagesNone, fcapi.HugePages2M); err != nil {
			return deserializeError(err)
		}
	}
	return nil
}

func (v *VMM) putMachineConfig(body []byte) *apiError {
	var m fcapi.MachineConfig
	if err := decode(body, machineConfigSchema, &m); err != nil {
		return deserializeError(err)
	}
	if e := v.preBoot(); e != nil {
		return e
	}
	if e := validateMachine(m); e != nil {
		return e
	}
	v.machine, v.bootConfigured = m, true // PUT resets the optional fields
	return nil
}

func (v *VMM) patchMachineConfig(body []byte) *apiError {
	m := v.machine
	if err := decode(body, machineConfigPatchSchema, &m); err != nil {
		return deserializeError(err)
	}
	if e := v.preBoot(); e != nil {
		return e
	}
	if e := validateMachine(m); e != nil {
		return e
	}
	v.machine, v.bootConfigured = m, true
	return nil
}

func (v *VMM) putNetworkInterface(id string, body []byte) *apiError {
	var n fcapi.NetworkInterface
	if err := decode(body, netIfaceSchema, &n); err != nil {
		return deserializeError(err)
	}
	if n.IfaceID != id {
		return badRequest("The id from the path [%s] does not match the id from the body [%s]!", id, n.IfaceID)
	}
	if e := v.preBoot(); e != nil {
		return e
	}
	if n.GuestMAC != "" && !macRE.MatchString(n.GuestMAC) {
		return deserializeError(fmt.Errorf("invalid MAC address: %s", n.GuestMAC))
	}
	for _, o := range v.ifaces {
		if o.IfaceID == n.IfaceID {
			continue
		}
		if o.HostDevName == n.HostDevName {
			return badRequest("Could not create the network device: The host device name %s is already in use.", n.HostDevName)
		}
		if n.GuestMAC != "" && o.GuestMAC == n.GuestMAC {
			return badRequest("Could not create the network device: The guest MAC address %s is already in use.", n.GuestMAC)
		}
	}
	v.bootConfigured = true
	if i := slices.IndexFunc(v.ifaces, func(o fcapi.NetworkInterface) bool { return o.IfaceID == n.IfaceID }); i >= 0 {
		v.ifaces[i] = n
	} else {
		v.ifaces = append(v.ifaces, n)
	}
	return nil
}

func (v *VMM) patchNetworkInterface(id string, body []byte) *apiError {
	var n fcapi.PartialNetworkInterface
	if err := decode(body, partialNetIfaceSchema, &n); err != nil {
		return deserializeError(err)
	}
	if n.IfaceID != id {
		return badRequest("The id from the path [%s] does not match the id from the body [%s]!", id, n.IfaceID)
	}
	if e := v.postBoot(); e != nil {
		return e
	}
	i := slices.IndexFunc(v.ifaces, func(o fcapi.NetworkInterface) bool { return o.IfaceID == n.IfaceID })
	if i < 0 {
		return badRequest("Invalid network interface ID: %s", n.IfaceID)
	}
	if n.RxRateLimiter != nil {
		v.ifaces[i].RxRateLimiter = n.RxRateLimiter
	}
	if n.TxRateLimiter != nil {
		v.ifaces[i].TxRateLimiter = n.TxRateLimiter
	}
	return nil
}

func (v *VMM) putVsock(body []byte) *apiError {
	var s fcapi.Vsock
	if err := decode(body, vsockSchema, &s); err != nil {
		return deserializeError(err)
	}
	if e := v.preBoot(); e != nil {
		return e
	}
	if s.GuestCID < 3 {
		return badRequest("Cannot create vsock device: invalid guest CID %d (must be 3 or more).", s.GuestCID)
	}
	// Firecracker binds the UDS at this PUT.
	dev, err := v.bindVsock(s.UDSPath)
	if err != nil {
		return badRequest("Cannot create backend for vsock device: %v", err)
	}
	if v.vsock != nil {
		v.vsock.close()
	}
	v.vsockCfg, v.vsock, v.bootConfigured = &s, dev, true
	return nil
}

func (v *VMM) bindVsock(path string) (*vsockDevice, error) {
	if path == "" {
		return nil, fmt.Errorf("empty uds_path")
	}
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("Error binding to the host-side Unix socket: %w", errAddrInUse)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("Error binding to the host-side Unix socket: %w", err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false) // Firecracker leaves the file behind
	return newVsockDevice(v, ul, path), nil
}

func (v *VMM) putEntropy(body []byte) *apiError {
	var e fcapi.Entropy
	if err := decode(body, entropySchema, &e); err != nil {
		return deserializeError(err)
	}
	if ae := v.preBoot(); ae != nil {
		return ae
	}
	v.entropy, v.bootConfigured = &e, true
	return nil
}

func (v *VMM) putSerial(body []byte) *apiError {
	var s fcapi.Serial
	if err := decode(body, serialSchema, &s); err != nil {
		return deserializeError(err)
	}
	if e := v.preBoot(); e != nil {
		return e
	}
	v.serial, v.bootConfigured = &s, true
	return nil
}

func (v *VMM) putBalloon(body []byte) *apiError {
	var b fcapi.Balloon
	if err := decode(body, balloonSchema, &b); err != nil {
		return deserializeError(err)
	}
	if e := v.preBoot(); e != nil {
		return e
	}
	if b.AmountMib > v.machine.MemSizeMib {
		return badRequest("Amount of pages requested is too large.")
	}
	v.balloon, v.bootConfigured = &b, true
	return nil
}

func (v *VMM) patchBalloon(body []byte) *apiError {
	var b fcapi.BalloonUpdate
	if err := decode(body, balloonUpdSchema, &b); err != nil {
		return deserializeError(err)
	}
	if e := v.postBoot(); e != nil {
		return e
	}
	if v.balloon == nil {
		return badRequest("The balloon device is not configured.")
	}
	if b.AmountMib > v.machine.MemSizeMib {
		return badRequest("Amount of pages requested is too large.")
	}
	v.balloon.AmountMib = b.AmountMib
	return nil
}

func (v *VMM) balloonStats() (any, *apiError) {
	if v.balloon == nil {
		return nil, badRequest("The balloon device is not configured.")
	}
	if v.balloon.StatsPollingIntervalS == 0 {
		return nil, badRequest("Statistics for the balloon device are not enabled")
	}
	pages := v.balloon.AmountMib * 256
	return fcapi.BalloonStats{TargetPages: pages, ActualPages: pages, TargetMib: v.balloon.AmountMib, ActualMib: v.balloon.AmountMib}, nil
}

func (v *VMM) patchBalloonStats(body []byte) *apiError {
	var s fcapi.BalloonStatsUpdate
	if err := decode(body, balloonStatSchema, &s); err != nil {
		return deserializeError(err)
	}
	if e := v.postBoot(); e != nil {
		return e
	}
	if v.balloon == nil {
		return badRequest("The balloon device is not configured.")
	}
	if v.balloon.StatsPollingIntervalS == 0 {
		return badRequest("Cannot enable or disable statistics after boot.")
	}
	v.balloon.StatsPollingIntervalS = s.StatsPollingIntervalS
	return nil
}
