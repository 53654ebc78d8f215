package imagebuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrBootTimeout is returned when the marker did not show on the serial
// console in time (TCG boots occasionally hang silently).
var ErrBootTimeout = errors.New("guest did not reach the marker in time")

// DefaultAppend is the kernel command line for a QEMU microvm boot.
const DefaultAppend = "console=ttyS0 root=/dev/vda rw panic=1"

// BootSpec describes one QEMU microvm boot used to check an image.
type BootSpec struct {
	QEMU       string // default qemu-system-x86_64
	Kernel     string
	Initrd     string
	Rootfs     string
	Append     string // default DefaultAppend
	MemoryMiB  int    // default 256
	Accel      string // default tcg (cpu max); "kvm" uses cpu host
	WorkDir    string // serial log and sockets go here; keep the path short (unix socket limit)
	Marker     string // text the guest prints once userspace runs
	SerialPort string // virtserialport name to attach; empty: none
	UserNet    bool   // add a restrict=on user-mode virtio-net NIC
	// TSCKHz is passed as tsc_early_khz= under TCG (see TCGAppend); 0 means
	// the host's, -1 leaves the command line alone.
	TSCKHz int
	// Wait is how long to wait for QEMU to exit after the marker (the
	// guest is expected to power off); it is killed afterwards. Default 20 s.
	Wait time.Duration
}

// BootResult is what a boot produced.
type BootResult struct {
	Args     []string      // the QEMU command line
	ToMarker time.Duration // from QEMU start to the marker on the serial console
	Serial   string        // everything the guest wrote to ttyS0
	Exited   bool          // QEMU exited by itself (guest powered off)
}

// Args returns the QEMU command line for spec.
func (s BootSpec) Args() []string {
	s = s.withDefaults()
	cpu := "max"
	if s.Accel == "kvm" {
		cpu = "host"
	}
	appendLine := s.Append
	if s.Accel == "tcg" && s.TSCKHz >= 0 {
		appendLine = TCGAppend(appendLine, s.TSCKHz)
	}
	args := []string{
		"-M", "microvm,x-option-roms=off", "-accel", s.Accel, "-cpu", cpu,
		"-m", fmt.Sprint(s.MemoryMiB), "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-global", "virtio-mmio.force-legacy=false",
		"-kernel", s.Kernel, "-append", appendLine, "-no-reboot",
	}
	if s.Initrd != "" {
		args = append(args, "-initrd", s.Initrd)
	}
	args = append(args,
		"-drive", "id=root,file="+s.Rootfs+",format=raw,if=none,cache=none",
		"-device", "virtio-blk-device,drive=root",
	)
	if s.UserNet {
		args = append(args, "-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-device,netdev=n0")
	}
	if s.SerialPort != "" {
		args = append(args,
			"-chardev", "socket,id=c0,path="+filepath.Join(s.WorkDir, "port.sock")+",server=on,wait=off",
			"-device", "virtio-serial-device",
			"-device", "virtserialport,chardev=c0,name="+s.SerialPort,
		)
	}
	args = append(args, "-serial", "file:"+s.serialLog())
	return args
}

// TCGAppend adds tsc_early_khz=<khz> to a kernel command line (khz 0: the
// host's TSC rate, which is what a TCG guest's TSC runs at) unless the line
// already has it. Under TCG on a busy host the kernel's PIT-based TSC
// calibration fails ("tsc: Unable to calibrate against PIT", no HPET or PM
// timer on microvm to fall back on) and the boot stalls right after
// "Marking TSC unstable"; giving the rate skips that calibration. Observed
// here: 4 of 6 boots stalled without it under load, 0 of 6 with it.
func TCGAppend(line string, khz int) string {
	if strings.Contains(line, "tsc_early_khz=") {
		return line
	}
	if khz <= 0 {
		var err error
		if khz, err = HostTSCKHz(); err != nil {
			return line
		}
	}
	return strings.TrimSpace(line + " tsc_early_khz=" + strconv.Itoa(khz))
}

// HostTSCKHz returns the host CPU's clock in kHz from /proc/cpuinfo ("cpu
// MHz" of the first CPU). With constant_tsc that is the TSC rate on
// virtualised hosts; on bare metal with frequency scaling it is approximate,
// which only skews the guest clock rate slightly.
func HostTSCKHz() (int, error) {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0, fmt.Errorf("read cpuinfo: %w", err)
	}
	return parseCPUMHz(string(data))
}

func parseCPUMHz(cpuinfo string) (int, error) {
	for _, line := range strings.Split(cpuinfo, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(k) != "cpu MHz" {
			continue
		}
		mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || mhz <= 0 {
			return 0, fmt.Errorf("parse cpu MHz %q: bad value", strings.TrimSpace(v))
		}
		return int(mhz*1000 + 0.5), nil
	}
	return 0, errors.New("no \"cpu MHz\" in /proc/cpuinfo")
}

func (s BootSpec) withDefaults() BootSpec {
	if s.QEMU == "" {
		s.QEMU = "qemu-system-x86_64"
	}
	if s.Append == "" {
		s.Append = DefaultAppend
	}
	if s.MemoryMiB == 0 {
		s.MemoryMiB = 256
	}
	if s.Accel == "" {
		s.Accel = "tcg"
	}
	if s.Wait == 0 {
		s.Wait = 20 * time.Second
	}
	return s
}

func (s BootSpec) serialLog() string { return filepath.Join(s.WorkDir, "serial.log") }

// Boot starts QEMU, waits until the marker appears on the serial console or
// ctx ends, then gives the guest Wait to power off. QEMU is killed on every
// path before Boot returns.
func Boot(ctx context.Context, spec BootSpec, log *slog.Logger) (BootResult, error) {
	spec = spec.withDefaults()
	res := BootResult{Args: spec.Args()}
	if spec.Marker == "" {
		return res, fmt.Errorf("boot: no marker given")
	}
	if err := os.MkdirAll(spec.WorkDir, 0o755); err != nil {
		return res, fmt.Errorf("boot: %w", err)
	}
	if err := os.Remove(spec.serialLog()); err != nil && !os.IsNotExist(err) {
		return res, fmt.Errorf("boot: %w", err)
	}

	var stderr bytes.Buffer
	cmd := exec.Command(spec.QEMU, res.Args...)
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	// Own process group, and die with us if we are killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("start qemu: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	kill := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
	log.Debug("qemu started", "pid", cmd.Process.Pid, "args", strings.Join(res.Args, " "))

	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for res.ToMarker == 0 {
		select {
		case <-ctx.Done():
			kill()
			res.Serial = readFile(spec.serialLog())
			return res, fmt.Errorf("boot: %w (%v); qemu: %s", ErrBootTimeout, ctx.Err(), strings.TrimSpace(stderr.String()))
		case err := <-exited:
			res.Exited = true
			res.Serial = readFile(spec.serialLog())
			if strings.Contains(res.Serial, spec.Marker) {
				res.ToMarker = time.Since(start)
				return res, nil
			}
			return res, fmt.Errorf("boot: qemu exited before the marker (%v): %s", err, strings.TrimSpace(stderr.String()))
		case <-tick.C:
			if strings.Contains(readFile(spec.serialLog()), spec.Marker) {
				res.ToMarker = time.Since(start)
			}
		}
	}

	wait := time.NewTimer(spec.Wait)
	defer wait.Stop()
	select {
	case err := <-exited:
		res.Exited = true
		if err != nil {
			log.Debug("qemu exit status", "err", err)
		}
	case <-wait.C:
		kill()
	case <-ctx.Done():
		kill()
	}
	res.Serial = readFile(spec.serialLog())
	return res, nil
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}
