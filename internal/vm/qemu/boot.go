package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

var (
	tapNameRe = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,15}$`)
	macRe     = regexp.MustCompile(`^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$`)
	idRe      = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,128}$`)
)

// errQEMUExited is the cause of an attempt context whose QEMU died.
var errQEMUExited = errors.New("qemu exited")

// validateNet checks the network part of a spec.
func validateNet(n *vm.NetSpec) error {
	if n == nil {
		return nil
	}
	if !tapNameRe.MatchString(n.TapName) {
		return fmt.Errorf("%w: tap name %q", vm.ErrInvalidSpec, n.TapName)
	}
	if n.MAC != "" && !macRe.MatchString(n.MAC) {
		return fmt.Errorf("%w: mac %q", vm.ErrInvalidSpec, n.MAC)
	}
	if n.NetNS != "" {
		if _, err := os.Stat(n.NetNS); err != nil {
			return fmt.Errorf("%w: netns %s: %w", vm.ErrInvalidSpec, n.NetNS, err)
		}
	}
	return nil
}

func validateID(id string) error {
	if !idRe.MatchString(id) {
		return fmt.Errorf("%w: id %q (letters, digits, . _ - only)", vm.ErrInvalidSpec, id)
	}
	return nil
}

// Create implements vm.Driver: it boots a new VM and returns once the guest
// is running, meaning envd answered the channel handshake (or the
// configured console marker appeared). A boot that hangs is killed and
// retried up to Config.BootAttempts times; a guest that stops by itself
// (kernel panic, init failure) is not retried.
func (d *Driver) Create(ctx context.Context, spec vm.Spec) (vm.Instance, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if err := validateID(spec.ID); err != nil {
		return nil, err
	}
	if err := checkFile("kernel", spec.Kernel); err != nil {
		return nil, err
	}
	if spec.Initrd != "" {
		if err := checkFile("initrd", spec.Initrd); err != nil {
			return nil, err
		}
	}
	if err := checkFile("rootfs", spec.Rootfs); err != nil {
		return nil, err
	}
	if err := checkDir("run dir", spec.RunDir); err != nil {
		return nil, err
	}
	if err := validateNet(spec.Net); err != nil {
		return nil, err
	}
	if err := checkNewMemoryFile(spec.MemoryFile); err != nil {
		return nil, err
	}
	accel, err := d.Accel(ctx, spec.Kernel)
	if err != nil {
		return nil, err
	}
	m := machine{
		Accel:      accel,
		CPU:        cpuFor(accel),
		MemoryMB:   spec.MemoryMB,
		VCPUs:      spec.VCPUs,
		Kernel:     spec.Kernel,
		Initrd:     spec.Initrd,
		Append:     d.kernelArgs(accel, spec.KernelArgs),
		DriveCache: d.driveCache(spec.Rootfs),
		NIC:        spec.Net != nil,
		MemoryFile: spec.MemoryFile != "",
	}
	if spec.Net != nil {
		m.MAC = spec.Net.MAC
	}
	lp := launch{spec: spec, m: m, tmpl: m.template()}
	if m.MemoryFile {
		lp.memObject, lp.ownRAMFile = memObject(m.MemoryMB, spec.MemoryFile, true), spec.MemoryFile
	}
	if spec.Net != nil {
		lp.netdev = tapNetdev(spec.Net.TapName)
	}
	inst, err := d.launchWithRetries(ctx, lp, &d.bootAttempts, &d.bootRetries)
	if err != nil {
		return nil, fmt.Errorf("create vm %s: %w", spec.ID, err)
	}
	d.boots.Add(1)
	return inst, nil
}

// checkNewMemoryFile checks a Spec.MemoryFile for Create: absolute, in an
// existing directory, not there yet, and without the comma QEMU's option
// parser would split on.
func checkNewMemoryFile(path string) error {
	if path == "" {
		return nil
	}
	switch {
	case !filepath.IsAbs(path):
		return fmt.Errorf("%w: memory file %q is not absolute", vm.ErrInvalidSpec, path)
	case strings.ContainsAny(path, ",\n"):
		return fmt.Errorf("%w: memory file %q contains a comma or newline", vm.ErrInvalidSpec, path)
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%w: memory file %s already exists", vm.ErrInvalidSpec, path)
	}
	return checkDir("memory file dir", filepath.Dir(path))
}

// kernelArgs is the guest kernel command line: the driver's base, the TSC
// rate under TCG (unless the caller set one), then the spec's extra args.
func (d *Driver) kernelArgs(accel, extra string) string {
	args := baseAppend
	if accel == AccelTCG && !strings.Contains(extra, "tsc_early_khz=") {
		if a := d.tcgTSCArg(); a != "" {
			args += " " + a
		}
	}
	return strings.TrimSpace(args + " " + extra)
}

// launch is one VM start: a fresh boot or a restore.
type launch struct {
	spec    vm.Spec
	m       machine
	tmpl    []string
	netdev  string
	memFile string // restore from this migration stream; "" = boot
	qemuVer string // restore: the version that wrote the stream
	// memObject is the RAM backend of a machine.MemoryFile machine;
	// ownRAMFile is the RAM file a boot creates (removed if it fails).
	memObject, ownRAMFile string
	// ignoreShared: the restore's stream was saved with x-ignore-shared
	// (its RAM is in the mapped file).
	ignoreShared bool
}

func (lp launch) args() ([]string, error) {
	ia := instanceArgs{
		Name: lp.spec.ID, Rootfs: lp.spec.Rootfs, RunDir: lp.spec.RunDir,
		Netdev: lp.netdev, Kernel: lp.m.Kernel, Initrd: lp.m.Initrd,
		MemObject: lp.memObject,
	}
	args, err := ia.render(lp.tmpl)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", vm.ErrInvalidSpec, err)
	}
	switch {
	case lp.memFile != "":
		// Nothing runs until migrate-incoming has loaded the state.
		args = append(args, "-incoming", "defer")
	case lp.spec.Placement != nil:
		// Prelaunch: the vCPUs wait for QMP cont, so Placement runs
		// before the guest touches its memory. -S is no device: the
		// machine template (and so a snapshot's device list) is the same.
		args = append(args, "-S")
	}
	return args, nil
}

func (d *Driver) launchWithRetries(ctx context.Context, lp launch, attempts, retries interface{ Add(int64) int64 }) (*Instance, error) {
	var lastErr error
	for n := 1; n <= d.cfg.BootAttempts; n++ {
		attempts.Add(1)
		inst, err := d.launchOnce(ctx, lp)
		if err == nil {
			inst.attempts = n
			return inst, nil
		}
		lastErr = err
		var rerr *retryableError
		if !errors.As(err, &rerr) || ctx.Err() != nil {
			break
		}
		if n < d.cfg.BootAttempts {
			retries.Add(1)
			d.log.Warn("vm start hung; killed it, retrying", "sandbox_id", lp.spec.ID,
				"attempt", n, "of", d.cfg.BootAttempts, "err", err)
		}
	}
	return nil, lastErr
}

// launchOnce starts QEMU and waits for the guest. On any error nothing of
// the attempt is left: no process, no file in RunDir.
func (d *Driver) launchOnce(ctx context.Context, lp launch) (inst *Instance, err error) {
	spec := lp.spec
	args, err := lp.args()
	if err != nil {
		return nil, err
	}
	removeRunFiles(spec.RunDir)
	if err := writeMachineFile(spec.RunDir, lp.m, lp.tmpl); err != nil {
		return nil, err
	}
	netns := ""
	if spec.Net != nil {
		netns = spec.Net.NetNS
	}
	start := time.Now()
	proc, err := startProcess(d.cfg.QEMU, args, runPath(spec.RunDir, qemuLog), netns)
	if err != nil {
		removeRunFiles(spec.RunDir)
		return nil, err
	}
	log := d.log.With("sandbox_id", spec.ID, "pid", proc.pid)
	log.Debug("qemu started", "args", strings.Join(args, " "))

	timeout := d.bootTimeout(spec)
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	actx, stopWatch := cancelOnExit(actx, proc)
	defer stopWatch()

	var q *QMP
	placed := true // false while a Placement hook has not succeeded
	dialer := newEnvdDialer(spec.RunDir, log, lp.memFile != "")
	defer func() {
		if err == nil {
			return
		}
		dialer.Close()
		if q != nil {
			q.Close()
		}
		if placed && ctx.Err() == nil && actx.Err() == nil {
			// The guest channel failed without a timeout: QEMU is most
			// likely on its way out; let it finish so its own status and
			// last words are what gets reported.
			t := time.NewTimer(2 * time.Second)
			select {
			case <-proc.exited:
			case <-t.C:
			}
			t.Stop()
		}
		exitedByItself := !proc.alive()
		kctx, kcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer kcancel()
		if kerr := proc.kill(kctx); kerr != nil {
			log.Error("qemu did not die", "err", kerr)
		}
		err = d.explain(ctx, actx, spec, proc, exitedByItself, err, timeout)
		removeRunFiles(spec.RunDir)
		if lp.ownRAMFile != "" {
			// A failed boot leaves no RAM file (Create made it).
			_ = os.Remove(lp.ownRAMFile)
		}
	}()

	if spec.Placement != nil {
		// QEMU is paused (-S or -incoming defer): no guest memory has
		// been touched by the guest or a state load yet.
		placed = false
		if err := spec.Placement(proc.pid); err != nil {
			return nil, fmt.Errorf("place vmm (pid %d): %w", proc.pid, err)
		}
		placed = true
	}
	q, err = dialQMPRetry(actx, runPath(spec.RunDir, qmpSocket))
	if err != nil {
		return nil, err
	}
	ispec := spec
	ispec.Placement = nil // the caller's hook is done with; do not keep it alive
	inst = &Instance{
		d: d, spec: ispec, m: lp.m, tmpl: lp.tmpl, proc: proc, qmp: q,
		envd: dialer, version: q.Version(), log: log,
	}
	if lp.memFile != "" {
		if lp.qemuVer != "" && lp.qemuVer != q.Version().String() {
			return nil, fmt.Errorf("%w: snapshot written by qemu %s, this is qemu %s",
				vm.ErrInvalidSpec, lp.qemuVer, q.Version())
		}
		if err := inst.incoming(actx, lp.memFile, lp.ignoreShared); err != nil {
			return nil, err
		}
		log.Debug("vm restored", "took", time.Since(start))
		return inst, nil
	}
	if spec.Placement != nil {
		// Started with -S: let the guest run now that it is placed.
		if err := inst.qmpExec(actx, "cont", nil, nil); err != nil {
			return nil, fmt.Errorf("start guest: %w", err)
		}
	}
	if err := d.waitGuest(actx, spec.RunDir, dialer); err != nil {
		return nil, err
	}
	log.Debug("vm booted", "took", time.Since(start))
	return inst, nil
}

// explain turns an attempt's raw error into one that says what happened:
// a hang (retryable, vm.ErrBootTimeout), QEMU exiting (its own message and
// the end of the console), or the caller giving up.
func (d *Driver) explain(ctx, actx context.Context, spec vm.Spec, proc *process, exitedByItself bool, err error, timeout time.Duration) error {
	qlog := strings.TrimSpace(tail(runPath(spec.RunDir, qemuLog), 2048, 20))
	console := consoleSummary(runPath(spec.RunDir, serialLog))
	detail := ""
	if qlog != "" {
		detail += "\nqemu: " + qlog
	}
	if console != "" {
		detail += "\nlast console lines:\n" + console
	}
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("%w%s", err, detail)
	case exitedByItself && !errors.Is(actx.Err(), context.DeadlineExceeded):
		status := "exited"
		if e := proc.exitErr(); e != nil {
			status = e.Error()
		}
		return fmt.Errorf("qemu stopped before the guest was up (%s): %w%s", status, err, detail)
	case errors.Is(actx.Err(), context.DeadlineExceeded):
		// Only a hang is retried. (actx is also cancelled, with cause
		// errQEMUExited, once the cleanup has killed QEMU: that is no
		// reason to retry an attempt that failed for another reason.)
		return &retryableError{fmt.Errorf("%w: no answer from the guest within %s: %w%s",
			vm.ErrBootTimeout, timeout, err, detail)}
	}
	return fmt.Errorf("%w%s", err, detail)
}

// newEnvdDialer returns the envd channel dialer for a VM. stale: the guest
// may hold a session from before a snapshot or from a previous agent.
func newEnvdDialer(runDir string, log *slog.Logger, stale bool) *envdclient.SerialDialer {
	return envdclient.NewSerialDialer(runPath(runDir, envdSocket), envdclient.SerialOptions{Log: log, Stale: stale})
}

// waitGuest returns once envd answered the channel handshake, or the
// configured marker is on the console.
func (d *Driver) waitGuest(ctx context.Context, runDir string, dialer *envdclient.SerialDialer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- dialer.Connect(ctx) }()
	if d.cfg.ReadyMarker != "" {
		go func() { errc <- waitForText(ctx, runPath(runDir, serialLog), d.cfg.ReadyMarker) }()
	}
	err := <-errc
	if err != nil {
		return fmt.Errorf("wait for guest: %w", err)
	}
	return nil
}

// waitForText polls file until it contains text.
func waitForText(ctx context.Context, file, text string) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if b, err := os.ReadFile(file); err == nil && strings.Contains(string(b), text) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("console marker %q: %w", text, ctx.Err())
		case <-t.C:
		}
	}
}

// cancelOnExit derives a context that ends with cause errQEMUExited when
// proc exits.
func cancelOnExit(ctx context.Context, proc *process) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-proc.exited:
			cancel(errQEMUExited)
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(nil) }
}

// dialQMPRetry connects to QMP, waiting for QEMU to create the socket.
func dialQMPRetry(ctx context.Context, path string) (*QMP, error) {
	delay := time.Millisecond
	for {
		q, err := DialQMP(ctx, path)
		if err == nil {
			return q, nil
		}
		var opErr *net.OpError
		if !errors.As(err, &opErr) || ctx.Err() != nil {
			return nil, err
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("connect qmp: %w (last: %w)", ctx.Err(), err)
		}
		delay = min(delay*2, 20*time.Millisecond)
	}
}

// machineFile is RunDir/machine.json: what Reattach needs to snapshot a VM
// it did not start.
type machineFile struct {
	Machine machine  `json:"machine"`
	Args    []string `json:"args_template"`
}

func writeMachineFile(runDir string, m machine, tmpl []string) error {
	data, err := json.MarshalIndent(machineFile{Machine: m, Args: tmpl}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(runPath(runDir, machineJSON), data, 0o640); err != nil {
		return fmt.Errorf("write machine file: %w", err)
	}
	return nil
}

func readMachineFile(runDir string) (machineFile, error) {
	var mf machineFile
	data, err := os.ReadFile(runPath(runDir, machineJSON))
	if err != nil {
		return mf, fmt.Errorf("read machine file: %w", err)
	}
	if err := json.Unmarshal(data, &mf); err != nil {
		return mf, fmt.Errorf("decode machine file: %w", err)
	}
	return mf, nil
}

// removeRunFiles deletes the files the driver creates in runDir.
func removeRunFiles(runDir string) {
	for _, f := range runFiles {
		_ = os.Remove(runPath(runDir, f))
	}
}

// keyConsoleLine matches console lines that explain a failed boot even
// when they scrolled out of the tail (init's complaint, the panic reason).
var keyConsoleLine = regexp.MustCompile(`wrenn-init:|Kernel panic|envd stopped|level=ERROR`)

// consoleSummary is the console's key lines followed by its last lines.
func consoleSummary(file string) string {
	last := strings.TrimSpace(tail(file, 4096, 15))
	all := tail(file, 256<<10, 1<<20)
	var key []string
	for _, l := range strings.Split(all, "\n") {
		if keyConsoleLine.MatchString(l) && !strings.Contains(last, l) && len(key) < 10 {
			key = append(key, l)
		}
	}
	if len(key) == 0 {
		return last
	}
	return strings.Join(key, "\n") + "\n...\n" + last
}

// tail returns the last lines (at most max bytes) of a file.
func tail(file string, maxBytes int64, lines int) string {
	f, err := os.Open(file)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-maxBytes, 0)
	buf := make([]byte, st.Size()-off)
	n, _ := f.ReadAt(buf, off)
	s := strings.ReplaceAll(string(buf[:n]), "\r", "")
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}
