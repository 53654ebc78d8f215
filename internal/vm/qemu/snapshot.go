package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// Files in a snapshot directory.
const (
	SnapshotMemFile    = "mem.state"
	SnapshotRootfsFile = "rootfs.ext4"
	SnapshotMetaFile   = "snapshot.json"
)

// quiesceTimeout bounds waiting for envd to park its channel before a
// snapshot.
const quiesceTimeout = 3 * time.Second

// maxBandwidth lifts QEMU 7.2's 128 MiB/s default migration cap.
const maxBandwidth = 10 << 30

// SnapshotMeta is snapshot.json.
type SnapshotMeta struct {
	Driver      string    `json:"driver"`
	QEMUVersion string    `json:"qemu_version"`
	Machine     machine   `json:"machine"`
	Args        []string  `json:"args_template"` // the exact machine args, with placeholders
	MemoryMB    int       `json:"memory_mb"`
	VCPUs       int       `json:"vcpus"`
	Kernel      string    `json:"kernel"`
	Initrd      string    `json:"initrd,omitempty"`
	SourceID    string    `json:"source_id"`
	CreatedAt   time.Time `json:"created_at"`
	MemFile     string    `json:"mem_file"`
	RootfsFile  string    `json:"rootfs_file"`
	RootfsCopy  string    `json:"rootfs_copy"` // reflink or sparse-copy
	// MemoryFile is the guest RAM file of a file-backed machine (the
	// state file then holds device state only): relative to the snapshot
	// dir when it lies inside it, else absolute. A restore maps it
	// privately, so it must not change while the snapshot is in use.
	MemoryFile string `json:"memory_file,omitempty"`
}

// memoryFilePath resolves meta.MemoryFile for the snapshot in dir.
func (m SnapshotMeta) memoryFilePath(dir string) string {
	if m.MemoryFile == "" || filepath.IsAbs(m.MemoryFile) {
		return m.MemoryFile
	}
	return filepath.Join(dir, m.MemoryFile)
}

// snapshotMemoryFile is how snapshot.json names ram, a file-backed VM's
// RAM file, for a snapshot in dir: relative when it lies inside dir (so
// the directory can be moved as a whole), else absolute.
func snapshotMemoryFile(dir, ram string) string {
	if rel, err := filepath.Rel(dir, ram); err == nil && filepath.IsLocal(rel) {
		return rel
	}
	return ram
}

// ignoreShared sets x-ignore-shared: when on, a migration skips RAM that
// is a shared file mapping (it is in the file already). Both ends of a
// migration must agree on it.
func (i *Instance) ignoreShared(ctx context.Context, on bool) error {
	caps := []map[string]any{{"capability": "x-ignore-shared", "state": on}}
	if err := i.qmpExec(ctx, "migrate-set-capabilities", map[string]any{"capabilities": caps}, nil); err != nil {
		return fmt.Errorf("set x-ignore-shared: %w", err)
	}
	return nil
}

// ReadSnapshotMeta reads dir/snapshot.json.
func ReadSnapshotMeta(dir string) (SnapshotMeta, error) {
	var m SnapshotMeta
	data, err := os.ReadFile(filepath.Join(dir, SnapshotMetaFile))
	if err != nil {
		return m, fmt.Errorf("%w: read snapshot: %w", vm.ErrInvalidSpec, err)
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("%w: decode %s: %w", vm.ErrInvalidSpec, SnapshotMetaFile, err)
	}
	if m.Driver != DriverName {
		return m, fmt.Errorf("%w: snapshot is for driver %q", vm.ErrInvalidSpec, m.Driver)
	}
	return m, nil
}

// shellQuote quotes s for sh -c (QEMU runs exec: URIs through the shell).
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// Snapshot implements vm.Instance: stop, migrate the state into
// dir/mem.state, copy the (flushed, inactivated) rootfs into
// dir/rootfs.ext4 and write dir/snapshot.json. The VM is left paused
// ("postmigrate"); Resume continues it, Destroy ends it.
func (i *Instance) Snapshot(ctx context.Context, dir string) (vm.SnapshotInfo, error) {
	i.opMu.Lock()
	defer i.opMu.Unlock()
	start := time.Now()
	info := vm.SnapshotInfo{Dir: dir}
	if err := checkDir("snapshot dir", dir); err != nil {
		return info, err
	}
	st, err := i.status(ctx)
	if err != nil {
		return info, fmt.Errorf("snapshot %s: %w", i.spec.ID, err)
	}
	switch st.Status {
	case "running":
		// Park envd's channel in handshake mode first, so the snapshot
		// holds no half-finished session (see SerialDialer.Quiesce).
		qctx, cancel := context.WithTimeout(ctx, quiesceTimeout)
		release, err := i.envd.Quiesce(qctx)
		cancel()
		if err != nil {
			i.log.Warn("envd channel not quiesced before snapshot; the restore will break its session", "err", err)
		} else {
			defer release()
		}
		if err := i.qmpExec(ctx, "stop", nil, nil); err != nil {
			return info, fmt.Errorf("snapshot %s: %w", i.spec.ID, err)
		}
	case "paused":
	default:
		return info, fmt.Errorf("snapshot %s: vm is %s (resume it first): %w", i.spec.ID, st.Status, vm.ErrWrongState)
	}
	mem := filepath.Join(dir, SnapshotMemFile)
	// Only the VM that owns the RAM file maps it shared; a restored VM's
	// private copy goes into the stream like anonymous RAM.
	// The capability is set either way: a restored VM still has it on
	// from its incoming migration, and the stream records it.
	fileRAM := i.m.MemoryFile && i.spec.MemoryFile != ""
	if i.m.MemoryFile {
		if err := i.ignoreShared(ctx, fileRAM); err != nil {
			return info, fmt.Errorf("snapshot %s: %w", i.spec.ID, err)
		}
	}
	if err := i.qmpExec(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": maxBandwidth}, nil); err != nil {
		return info, fmt.Errorf("snapshot %s: %w", i.spec.ID, err)
	}
	if err := i.qmpExec(ctx, "migrate", map[string]any{"uri": "exec:cat > " + shellQuote(mem)}, nil); err != nil {
		return info, fmt.Errorf("snapshot %s: %w", i.spec.ID, err)
	}
	if err := i.waitMigration(ctx); err != nil {
		return info, fmt.Errorf("snapshot %s: save memory: %w", i.spec.ID, err)
	}
	method, err := CloneFile(i.spec.Rootfs, filepath.Join(dir, SnapshotRootfsFile))
	if err != nil {
		return info, fmt.Errorf("snapshot %s: copy rootfs: %w", i.spec.ID, err)
	}
	meta := SnapshotMeta{
		Driver:      DriverName,
		QEMUVersion: i.version.String(),
		Machine:     i.m,
		Args:        i.tmpl,
		MemoryMB:    i.m.MemoryMB,
		VCPUs:       i.m.VCPUs,
		Kernel:      i.m.Kernel,
		Initrd:      i.m.Initrd,
		SourceID:    i.spec.ID,
		CreatedAt:   time.Now().UTC(),
		MemFile:     SnapshotMemFile,
		RootfsFile:  SnapshotRootfsFile,
		RootfsCopy:  method,
	}
	if fileRAM {
		meta.MemoryFile = snapshotMemoryFile(dir, i.spec.MemoryFile)
	}
	data, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return info, err
	}
	if err := os.WriteFile(filepath.Join(dir, SnapshotMetaFile), data, 0o644); err != nil {
		return info, fmt.Errorf("snapshot %s: %w", i.spec.ID, err)
	}
	if fi, err := os.Stat(mem); err == nil {
		info.MemBytes = fi.Size()
	}
	if fileRAM {
		// The guest RAM file is part of the snapshot's memory.
		info.MemBytes += allocatedBytes(i.spec.MemoryFile)
	}
	info.DiskBytes = allocatedBytes(filepath.Join(dir, SnapshotRootfsFile))
	info.Took = time.Since(start)
	i.log.Debug("vm snapshotted", "dir", dir, "mem_bytes", info.MemBytes,
		"disk_bytes", info.DiskBytes, "rootfs_copy", method, "took", info.Took)
	return info, nil
}

// waitMigration polls query-migrate until the migration has completed.
func (i *Instance) waitMigration(ctx context.Context) error {
	delay := time.Millisecond
	for {
		q, err := i.monitor(ctx)
		if err != nil {
			return err
		}
		mi, err := q.QueryMigrate(ctx)
		if err != nil {
			return err
		}
		switch mi.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("migration %s: %s", mi.Status, mi.ErrorDesc)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		delay = min(delay*2, 10*time.Millisecond)
	}
}

// incoming loads a migration stream into a QEMU started with
// -incoming defer and continues the guest. fileRAM: the stream was saved
// with x-ignore-shared and RAM comes from the mapped file.
func (i *Instance) incoming(ctx context.Context, memFile string, fileRAM bool) error {
	if fileRAM {
		if err := i.ignoreShared(ctx, true); err != nil {
			return fmt.Errorf("load state: %w", err)
		}
	}
	if err := i.qmpExec(ctx, "migrate-incoming", map[string]any{"uri": "exec:cat " + shellQuote(memFile)}, nil); err != nil {
		return fmt.Errorf("load state: %w", err)
	}
	if err := i.waitMigration(ctx); err != nil {
		return fmt.Errorf("load state: %w", err)
	}
	st, err := i.status(ctx)
	if err != nil {
		return fmt.Errorf("load state: %w", err)
	}
	if st.Status != "running" {
		if err := i.qmpExec(ctx, "cont", nil, nil); err != nil {
			return fmt.Errorf("continue restored vm: %w", err)
		}
	}
	return nil
}

// Restore implements vm.Driver. spec supplies ID, Rootfs (a copy of the
// snapshot's rootfs.ext4 the caller made), RunDir and Net; kernel and
// initrd default to the snapshot's paths; memory and vCPUs come from the
// snapshot (a different non-zero value in spec is an error). The envd
// channel's first handshake sends the break at once, because the guest
// still holds the session it had when the snapshot was taken.
func (d *Driver) Restore(ctx context.Context, spec vm.Spec, dir string) (vm.Instance, error) {
	meta, err := ReadSnapshotMeta(dir)
	if err != nil {
		return nil, err
	}
	if err := validateID(spec.ID); err != nil {
		return nil, err
	}
	m := meta.Machine
	switch {
	case spec.MemoryMB != 0 && spec.MemoryMB != m.MemoryMB:
		return nil, fmt.Errorf("%w: snapshot has %d MiB, spec asks %d", vm.ErrInvalidSpec, m.MemoryMB, spec.MemoryMB)
	case spec.VCPUs != 0 && spec.VCPUs != m.VCPUs:
		return nil, fmt.Errorf("%w: snapshot has %d vcpus, spec asks %d", vm.ErrInvalidSpec, m.VCPUs, spec.VCPUs)
	case spec.Rootfs == "" || spec.RunDir == "":
		return nil, fmt.Errorf("%w: rootfs and run dir are required", vm.ErrInvalidSpec)
	case !m.NIC && spec.Net != nil:
		return nil, fmt.Errorf("%w: snapshot has no network card to attach %s to", vm.ErrInvalidSpec, spec.Net.TapName)
	case m.NIC && spec.Net == nil:
		// The saved virtio-net state needs a backend with vnet headers,
		// which only a TAP has.
		return nil, fmt.Errorf("%w: snapshot has a network card: a TAP (spec.Net) is required", vm.ErrInvalidSpec)
	}
	spec.MemoryMB, spec.VCPUs = m.MemoryMB, m.VCPUs
	if spec.Kernel == "" {
		spec.Kernel = m.Kernel
	}
	if spec.Initrd == "" {
		spec.Initrd = m.Initrd
	}
	if (spec.Initrd == "") != (m.Initrd == "") {
		return nil, fmt.Errorf("%w: snapshot and spec disagree on having an initrd", vm.ErrInvalidSpec)
	}
	m.Kernel, m.Initrd = spec.Kernel, spec.Initrd
	ram := meta.memoryFilePath(dir)
	if ram != "" && !m.MemoryFile {
		return nil, fmt.Errorf("%w: snapshot names a memory file its machine does not use", vm.ErrInvalidSpec)
	}
	if strings.ContainsAny(ram, ",\n") {
		return nil, fmt.Errorf("%w: memory file %q contains a comma or newline", vm.ErrInvalidSpec, ram)
	}
	for what, p := range map[string]string{"kernel": m.Kernel, "initrd": m.Initrd, "rootfs": spec.Rootfs,
		"memory state": filepath.Join(dir, meta.MemFile), "memory file": ram} {
		if p == "" {
			continue
		}
		if err := checkFile(what, p); err != nil {
			return nil, err
		}
	}
	if err := checkDir("run dir", spec.RunDir); err != nil {
		return nil, err
	}
	if err := validateNet(spec.Net); err != nil {
		return nil, err
	}
	// The restore's spec does not own the RAM file; only the template did.
	spec.MemoryFile = ""
	lp := launch{spec: spec, m: m, tmpl: meta.Args, memFile: filepath.Join(dir, meta.MemFile), qemuVer: meta.QEMUVersion}
	if m.MemoryFile {
		lp.memObject, lp.ignoreShared = memObject(m.MemoryMB, ram, false), ram != ""
	}
	if m.NIC {
		lp.netdev = tapNetdev(spec.Net.TapName)
		n := *spec.Net
		n.MAC = m.MAC // the guest keeps the MAC it booted with
		spec.Net = &n
		lp.spec = spec
	}
	inst, err := d.launchWithRetries(ctx, lp, noCount{}, &d.restoreRetries)
	if err != nil {
		return nil, fmt.Errorf("restore vm %s from %s: %w", spec.ID, dir, err)
	}
	d.restores.Add(1)
	return inst, nil
}

type noCount struct{}

func (noCount) Add(int64) int64 { return 0 }

// Reattach implements vm.Driver: it adopts a QEMU left running by a
// previous agent process, after checking that the pid still is that VM's
// QEMU. ErrNotFound when it is gone.
func (d *Driver) Reattach(ctx context.Context, h vm.Handle) (vm.Instance, error) {
	if h.Driver != DriverName {
		return nil, fmt.Errorf("reattach %s: handle is for driver %q: %w", h.ID, h.Driver, vm.ErrInvalidSpec)
	}
	// Open the pidfd first, then check the process behind it: a pid
	// recycled after the check could not slip in.
	proc, err := adoptProcess(h.PID)
	if err != nil {
		return nil, fmt.Errorf("reattach %s: %w: %w", h.ID, vm.ErrNotFound, err)
	}
	if !isOurQEMU(h.PID, h.ID) {
		return nil, fmt.Errorf("reattach %s: pid %d is not its qemu: %w", h.ID, h.PID, vm.ErrNotFound)
	}
	spec := h.Spec
	mf, err := readMachineFile(spec.RunDir)
	if err != nil {
		return nil, fmt.Errorf("reattach %s: %w", h.ID, err)
	}
	q, err := DialQMP(ctx, runPath(spec.RunDir, qmpSocket))
	if err != nil {
		return nil, fmt.Errorf("reattach %s: %w", h.ID, err)
	}
	log := d.log.With("sandbox_id", spec.ID, "pid", h.PID)
	inst := &Instance{
		d: d, spec: spec, m: mf.Machine, tmpl: mf.Args, proc: proc, qmp: q,
		envd:    newEnvdDialer(spec.RunDir, log, true),
		version: q.Version(), log: log,
	}
	log.Info("reattached to running qemu")
	return inst, nil
}

// allocatedBytes is the disk space a file occupies (sparse files count
// only their data).
func allocatedBytes(path string) int64 {
	st, err := statBlocks(path)
	if err != nil {
		return 0
	}
	return st
}
