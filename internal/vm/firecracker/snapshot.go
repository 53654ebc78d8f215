package firecracker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fcapi"
)

// Files in a snapshot directory.
const (
	snapMetaName    = "snapshot.json"
	snapStateName   = "vmstate"
	snapMemName     = "mem"
	snapRootfsName  = "rootfs.ext4"
	snapFormat      = 1
	jailSnapshotDir = "/snapshot"
)

// snapshotMeta is snapshot.json: what Restore needs to know about the paths
// baked into vmstate.
type snapshotMeta struct {
	Format       int        `json:"format"`
	Driver       string     `json:"driver"`
	Type         string     `json:"snapshot_type"`
	Created      time.Time  `json:"created"`
	VMMVersion   string     `json:"vmm_version,omitempty"`
	RootfsMode   RootfsMode `json:"rootfs_mode"`
	DrivePath    string     `json:"drive_path"` // path_on_host baked into vmstate
	TapName      string     `json:"tap_name,omitempty"`
	VsockPath    string     `json:"vsock_path"`
	VCPUs        int        `json:"vcpus"`
	MemoryMB     int        `json:"memory_mb"`
	SourceID     string     `json:"source_id"`
	DirtyTracked bool       `json:"dirty_tracked"`
}

// SnapshotOptions selects the snapshot type. A Diff snapshot holds only the
// pages written since the previous snapshot; applying it to the previous
// memory file is the caller's job (Firecracker does not merge).
type SnapshotOptions struct {
	Diff bool
}

// Snapshot writes a Full snapshot to dir and leaves the VM paused.
func (in *instance) Snapshot(ctx context.Context, dir string) (vm.SnapshotInfo, error) {
	return in.SnapshotWith(ctx, dir, SnapshotOptions{})
}

// SnapshotWith pauses the VM, has Firecracker write vmstate and mem into
// dir, copies the rootfs (reflink, else sparse copy) to dir/rootfs.ext4 and
// writes snapshot.json. The VM is left paused. Snapshot creation makes the
// guest drop every vsock connection when it next runs (here or restored):
// callers redial.
func (in *instance) SnapshotWith(ctx context.Context, dir string, opts SnapshotOptions) (vm.SnapshotInfo, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	start := time.Now()
	if in.destroyed || in.proc.done() {
		return vm.SnapshotInfo{}, fmt.Errorf("snapshot vm %s: %w", in.spec.ID, vm.ErrWrongState)
	}
	fail := func(what string, err error) (vm.SnapshotInfo, error) {
		return vm.SnapshotInfo{}, fmt.Errorf("snapshot vm %s: %s: %w", in.spec.ID, what, err)
	}
	st, err := in.State(ctx)
	if err != nil {
		return fail("state", err)
	}
	switch st {
	case vm.StateRunning:
		if err := in.api.Pause(ctx); err != nil {
			return fail("pause", err)
		}
	case vm.StatePaused:
	default:
		return fail("state "+string(st), vm.ErrWrongState)
	}
	typ := fcapi.SnapshotFull
	if opts.Diff {
		typ = fcapi.SnapshotDiff
	}
	statePath, memPath := filepath.Join(dir, snapStateName), filepath.Join(dir, snapMemName)
	if err := in.createSnapshot(ctx, typ, statePath, memPath); err != nil {
		return fail("create", err)
	}
	diskBytes, err := cloneFile(in.paths.rootfsHost, filepath.Join(dir, snapRootfsName))
	if err != nil {
		return fail("copy rootfs", err)
	}
	meta := snapshotMeta{
		Format: snapFormat, Driver: DriverName, Type: typ, Created: time.Now().UTC(),
		RootfsMode: in.paths.mode, DrivePath: in.paths.rootfsFC, VsockPath: in.paths.vsockFC,
		VCPUs: in.spec.VCPUs, MemoryMB: in.spec.MemoryMB, SourceID: in.spec.ID,
		DirtyTracked: in.d.cfg.TrackDirtyPages,
	}
	if in.spec.Net != nil {
		meta.TapName = in.spec.Net.TapName
	}
	if v, err := in.api.GetVersion(ctx); err == nil {
		meta.VMMVersion = v.FirecrackerVersion
	}
	if err := writeJSON(filepath.Join(dir, snapMetaName), meta); err != nil {
		return fail("write metadata", err)
	}
	fi, err := os.Stat(memPath)
	if err != nil {
		return fail("stat memory file", err)
	}
	return vm.SnapshotInfo{Dir: dir, MemBytes: fi.Size(), DiskBytes: diskBytes, Took: time.Since(start)}, nil
}

// createSnapshot runs PUT /snapshot/create. A jailed Firecracker can only
// write inside its jail, so the files are written there and moved out.
func (in *instance) createSnapshot(ctx context.Context, typ, statePath, memPath string) error {
	p := in.paths
	if p.jail == nil {
		return in.api.CreateSnapshot(ctx, fcapi.SnapshotCreateParams{SnapshotPath: statePath, MemFilePath: memPath, SnapshotType: typ})
	}
	stage := p.jail.HostPath(jailSnapshotDir)
	if err := os.MkdirAll(stage, 0o755); err != nil {
		return err
	}
	if err := os.Chown(stage, p.jail.UID, p.jail.GID); err != nil {
		return err
	}
	defer os.RemoveAll(stage)
	js, jm := jailSnapshotDir+"/"+snapStateName, jailSnapshotDir+"/"+snapMemName
	if err := in.api.CreateSnapshot(ctx, fcapi.SnapshotCreateParams{SnapshotPath: js, MemFilePath: jm, SnapshotType: typ}); err != nil {
		return err
	}
	if err := moveFile(p.jail.HostPath(js), statePath); err != nil {
		return err
	}
	return moveFile(p.jail.HostPath(jm), memPath)
}

// Restore starts a new VMM and loads the snapshot in dir, with spec's
// rootfs, RunDir, TAP and a new vsock socket. VCPUs and memory come from the
// snapshot. The VM is running when Restore returns.
func (d *Driver) Restore(ctx context.Context, spec vm.Spec, dir string) (vm.Instance, error) {
	if err := checkSpec(spec, false); err != nil {
		return nil, err
	}
	var meta snapshotMeta
	if err := readJSON(filepath.Join(dir, snapMetaName), &meta); err != nil {
		return nil, fmt.Errorf("%w: snapshot %s: %w", vm.ErrInvalidSpec, dir, err)
	}
	if meta.Driver != DriverName || meta.Format != snapFormat {
		return nil, fmt.Errorf("%w: snapshot %s: driver %q format %d is not ours", vm.ErrInvalidSpec, dir, meta.Driver, meta.Format)
	}
	for _, f := range []string{snapStateName, snapMemName} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return nil, fmt.Errorf("%w: snapshot %s: %w", vm.ErrInvalidSpec, dir, err)
		}
	}
	p, err := d.paths(spec)
	if err != nil {
		return nil, err
	}
	if p.rootfsFC != meta.DrivePath {
		return nil, fmt.Errorf("%w: snapshot %s has its rootfs at %s (mode %s) but this VM's would be at %s (mode %s): "+
			"restoring onto another rootfs needs the private-mount mode or the jailer",
			vm.ErrInvalidSpec, dir, meta.DrivePath, meta.RootfsMode, p.rootfsFC, p.mode)
	}
	if (meta.TapName != "") != (spec.Net != nil) {
		return nil, fmt.Errorf("%w: snapshot %s: network mismatch (snapshot tap %q, spec has net: %v)", vm.ErrInvalidSpec, dir, meta.TapName, spec.Net != nil)
	}
	spec.VCPUs, spec.MemoryMB = meta.VCPUs, meta.MemoryMB

	ctx, cancel := context.WithTimeout(ctx, d.bootTimeout(spec))
	defer cancel()
	start := time.Now()
	in, err := d.launch(ctx, spec)
	if err != nil {
		return nil, err
	}
	if err := d.load(ctx, in, dir, meta); err != nil {
		return nil, in.fail(ctx, "load snapshot", err)
	}
	d.log.Info("vm restored", "sandbox_id", spec.ID, "snapshot", dir, "pid", in.proc.pid, "took", time.Since(start))
	return in, nil
}

func (d *Driver) load(ctx context.Context, in *instance, dir string, meta snapshotMeta) error {
	if err := d.observe(ctx, in); err != nil {
		return err
	}
	statePath, memPath := filepath.Join(dir, snapStateName), filepath.Join(dir, snapMemName)
	if p := in.paths; p.jail != nil {
		// The memory file is mapped lazily and must stay unchanged: a hard
		// link (or copy) into the jail.
		var err error
		if statePath, err = p.jail.Place(statePath, jailSnapshotDir+"/"+snapStateName, false); err != nil {
			return err
		}
		if memPath, err = p.jail.Place(memPath, jailSnapshotDir+"/"+snapMemName, false); err != nil {
			return err
		}
	}
	params := fcapi.SnapshotLoadParams{
		SnapshotPath:    statePath,
		MemBackend:      &fcapi.MemoryBackend{BackendType: fcapi.BackendFile, BackendPath: memPath},
		ResumeVM:        true,
		TrackDirtyPages: d.cfg.TrackDirtyPages,
		VsockOverride:   &fcapi.VsockOverride{UDSPath: in.paths.vsockFC},
	}
	if in.spec.Net != nil {
		params.NetworkOverrides = []fcapi.NetworkOverride{{IfaceID: ifaceID, HostDevName: in.spec.Net.TapName}}
	}
	if err := in.api.LoadSnapshot(ctx, params); err != nil {
		return err
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}
