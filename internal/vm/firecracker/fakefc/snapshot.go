package fakefc

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fcapi"
)

// The fake's snapshot files. Honest limits: the fake cannot save process
// memory. "vmstate" is JSON describing the machine (the configuration a
// real load restores: devices, drive paths, TAP names, vsock UDS) plus, for
// information only, the envd pid and port at snapshot time. "mem" is a
// sparse file of the guest memory size whose first bytes name the vmstate
// it belongs to, so a load can check the pair. A load starts a fresh envd:
// processes and in-memory state of the old guest are not carried over.

const (
	vmstateMagic = "wrenn-fake-firecracker-vmstate/1"
	memMagic     = "WRENN-FAKE-FC-MEM/1 "
)

type vmState struct {
	Magic         string                   `json:"magic"`
	SnapshotID    string                   `json:"snapshot_id"`
	SnapshotType  string                   `json:"snapshot_type"`
	VMMVersion    string                   `json:"vmm_version"`
	Created       time.Time                `json:"created"`
	BootSource    *fcapi.BootSource        `json:"boot_source,omitempty"`
	Drives        []fcapi.Drive            `json:"drives,omitempty"`
	MachineConfig fcapi.MachineConfig      `json:"machine_config"`
	Ifaces        []fcapi.NetworkInterface `json:"network_interfaces,omitempty"`
	Vsock         *fcapi.Vsock             `json:"vsock,omitempty"`
	Entropy       *fcapi.Entropy           `json:"entropy,omitempty"`
	Balloon       *fcapi.Balloon           `json:"balloon,omitempty"`
	MMDSConfig    *fcapi.MMDSConfig        `json:"mmds_config,omitempty"`
	MemBytes      int64                    `json:"mem_bytes"`
	// Informational: the fake cannot restore this process.
	EnvdPID  int `json:"envd_pid,omitempty"`
	EnvdPort int `json:"envd_port,omitempty"`
}

func (v *VMM) createSnapshot(body []byte) *apiError {
	var p fcapi.SnapshotCreateParams
	if err := decode(body, snapCreateSchema, &p); err != nil {
		return deserializeError(err)
	}
	if p.SnapshotType == "" {
		p.SnapshotType = fcapi.SnapshotFull
	}
	if err := oneOf(p.SnapshotType, fcapi.SnapshotFull, fcapi.SnapshotDiff); err != nil {
		return deserializeError(err)
	}
	if e := v.postBoot(); e != nil {
		return e
	}
	if v.state != statePaused {
		return badRequest("Cannot create a snapshot: the microVM is not paused (PATCH /vm Paused first).")
	}
	var idb [8]byte
	_, _ = rand.Read(idb[:])
	st := vmState{
		Magic: vmstateMagic, SnapshotID: hex.EncodeToString(idb[:]), SnapshotType: p.SnapshotType,
		VMMVersion: Version, Created: time.Now().UTC(), BootSource: v.bootSource, Drives: v.drives,
		MachineConfig: v.machine, Ifaces: v.ifaces, Vsock: v.vsockCfg, Entropy: v.entropy,
		Balloon: v.balloon, MMDSConfig: v.mmdsConfig, MemBytes: int64(v.machine.MemSizeMib) << 20,
	}
	if v.guest != nil {
		st.EnvdPID, st.EnvdPort = v.guest.pid, v.guest.port
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := os.WriteFile(p.SnapshotPath, b, 0o600); err != nil { // truncates, as Firecracker does
		return badRequest("Cannot save the microVM state: %v", err)
	}
	if err := writeMemFile(p.MemFilePath, st.SnapshotID, st.MemBytes); err != nil {
		return badRequest("Cannot save the memory: %v", err)
	}
	// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET: the guest drops every vsock
	// connection when it next runs, here or in a restored copy.
	if v.vsock != nil {
		v.vsock.reset()
	}
	v.logf("Snapshot created: %s (%s)", p.SnapshotPath, p.SnapshotType)
	return nil
}

func writeMemFile(path, id string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(f, memMagic+id+"\n"); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Truncate(size); err != nil { // sparse: the rest reads as zeros
		_ = f.Close()
		return err
	}
	return f.Close()
}

func checkMemFile(path, id string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != size {
		return fmt.Errorf("memory file %s is %d bytes, the snapshot needs %d", path, fi.Size(), size)
	}
	want := []byte(memMagic + id + "\n")
	got := make([]byte, len(want))
	if _, err := io.ReadFull(f, got); err != nil || !bytes.Equal(got, want) {
		return fmt.Errorf("memory file %s does not belong to this snapshot", path)
	}
	return nil
}

func (v *VMM) loadSnapshot(body []byte) *apiError {
	var p fcapi.SnapshotLoadParams
	if err := decode(body, snapLoadSchema, &p); err != nil {
		return deserializeError(err)
	}
	switch {
	case p.MemBackend != nil && p.MemFilePath != "":
		return badRequest("too many fields: either `mem_backend` or `mem_file_path` exclusively is required.")
	case p.MemBackend == nil && p.MemFilePath == "":
		return badRequest("missing field: either `mem_backend` or `mem_file_path` is required.")
	}
	if p.MemBackend != nil {
		if err := oneOf(p.MemBackend.BackendType, fcapi.BackendFile, fcapi.BackendUffd); err != nil {
			return deserializeError(err)
		}
	}
	if v.state != stateNotStarted {
		return errAfterBoot
	}
	if v.bootConfigured {
		return errLoadAfterConfig
	}
	memPath := p.MemFilePath
	if p.MemBackend != nil {
		if p.MemBackend.BackendType == fcapi.BackendUffd {
			return badRequest("Load snapshot error: the fake Firecracker does not implement the Uffd memory backend.")
		}
		memPath = p.MemBackend.BackendPath
	}
	// From here on a failure ends the process, as a failed load ends
	// Firecracker.
	if err := v.restore(p, memPath); err != nil {
		v.Exit(1, err)
		return badRequest("Load snapshot error: %v", err)
	}
	return nil
}

func (v *VMM) restore(p fcapi.SnapshotLoadParams, memPath string) error {
	raw, err := os.ReadFile(p.SnapshotPath)
	if err != nil {
		return fmt.Errorf("cannot open the snapshot file: %w", err)
	}
	var st vmState
	if err := json.Unmarshal(raw, &st); err != nil || st.Magic != vmstateMagic {
		return errors.New("the snapshot file is not a fake-firecracker microVM state")
	}
	if err := checkMemFile(memPath, st.SnapshotID, st.MemBytes); err != nil {
		return fmt.Errorf("cannot load the memory: %w", err)
	}
	ifaces := slices.Clone(st.Ifaces)
	for _, o := range p.NetworkOverrides {
		i := slices.IndexFunc(ifaces, func(n fcapi.NetworkInterface) bool { return n.IfaceID == o.IfaceID })
		if i < 0 {
			return fmt.Errorf("invalid network override: no interface %q in the snapshot", o.IfaceID)
		}
		ifaces[i].HostDevName = o.HostDevName
	}
	// Disk paths are baked into the snapshot: they must exist again.
	for _, d := range st.Drives {
		if d.Socket == "" {
			if e := checkFile("the block device file", d.PathOnHost); e != nil {
				return errors.New(e.msg)
			}
		}
	}
	var dev *vsockDevice
	vs := st.Vsock
	if p.VsockOverride != nil {
		if vs == nil {
			return errors.New("vsock override given but the snapshot has no vsock device")
		}
		c := *vs
		c.UDSPath = p.VsockOverride.UDSPath
		vs = &c
	}
	if vs != nil {
		if dev, err = v.bindVsock(vs.UDSPath); err != nil {
			return fmt.Errorf("cannot restore the vsock device: %w", err)
		}
	}
	v.bootSource, v.drives, v.machine, v.ifaces = st.BootSource, st.Drives, st.MachineConfig, ifaces
	v.vsockCfg, v.vsock, v.entropy, v.balloon, v.mmdsConfig = vs, dev, st.Entropy, st.Balloon, st.MMDSConfig
	if p.TrackDirtyPages || p.EnableDiffSnapshots {
		v.machine.TrackDirtyPages = true
	}
	if err := v.bootGuest(); err != nil {
		return err
	}
	v.state = statePaused
	if v.guest != nil {
		if err := v.guest.stop(); err != nil {
			return fmt.Errorf("pause restored guest: %w", err)
		}
	}
	if p.ResumeVM {
		if v.guest != nil {
			if err := v.guest.cont(); err != nil {
				return fmt.Errorf("resume restored guest: %w", err)
			}
		}
		v.state = stateRunning
	}
	v.logf("Snapshot loaded from %s", p.SnapshotPath)
	return nil
}
