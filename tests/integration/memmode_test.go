package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem/fstest"
	"github.com/wrenn-dev/wrenn-sandbox/internal/imagebuild"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/qemu"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/qemu/qemutest"
)

// BenchmarkRestoreMemoryModes is a prototype that measures, with QEMU
// driven directly, what the QEMU driver's restore would gain from
// file-backed guest memory and the x-ignore-shared migration capability:
//
//   - stream: what the qemuDriver does today. Guest RAM is anonymous memory;
//     the snapshot writes every non-zero page into the state file, and a
//     restore reads the whole file back (migrate-incoming exec:cat).
//   - file: the template VM runs with memory-backend-file,share=on, so its
//     RAM is a file; the snapshot (x-ignore-shared) writes only device
//     state, and each restore maps the RAM file private (share=off:
//     copy-on-write, pages read lazily on first touch) and loads the tiny
//     state. Any number of sandboxes share the one RAM file.
//
// Both restore the same guest (minimal template, 256 MiB, quiesced envd
// channel) and time QEMU start to running, envd /init, and the first
// exec (the steps of snapshot.CreateFromTemplate after the clone).
func BenchmarkRestoreMemoryModes(b *testing.B) {
	reg := fstest.MinimalRegistry(b)
	r, k := openRegistry(b, reg)
	im, err := r.Resolve(fstest.Minimal, "")
	if err != nil {
		b.Fatal(err)
	}
	d := qemuDriver(b, k.Image) // resolves the accelerator
	_ = d
	ctx := context.Background()
	khz, _ := imagebuild.HostTSCKHz()
	base := protoVM{
		accel: qemutest.Accel(), kernel: k.Image, initrd: k.Initrd, memMB: 256,
		append: fmt.Sprintf("console=ttyS0 root=/dev/vda rw panic=1 quiet tsc_early_khz=%d", khz),
	}
	modes := []string{"stream", "file"}
	snaps := map[string]string{}
	for _, mode := range modes {
		snaps[mode] = protoTemplate(b, ctx, base, mode, im.Rootfs)
	}
	s := phaseSamples{}
	n := 0
	for b.Loop() {
		for _, mode := range modes {
			b.StopTimer()
			dir := snaps[mode]
			v := base
			v.mode, v.run = mode, shortTempDir(b)
			v.rootfs = filepath.Join(v.run, "rootfs.ext4")
			if _, err := filesystem.Clone(ctx, filepath.Join(dir, "rootfs.ext4"), v.rootfs); err != nil {
				b.Fatal(err)
			}
			v.ram = filepath.Join(dir, "mem.ram")
			n++
			b.StartTimer()
			start := time.Now()
			p, q := v.start(b, true)
			protoSetCaps(b, ctx, q, mode)
			if err := q.Execute(ctx, "migrate-incoming", map[string]any{"uri": "exec:cat " + filepath.Join(dir, "state")}, nil); err != nil {
				b.Fatal(err)
			}
			protoWaitMigration(b, ctx, q)
			if err := q.Execute(ctx, "cont", nil, nil); err != nil {
				b.Fatal(err)
			}
			s.add(mode+"-restore", time.Since(start))
			// The same envd calls as snapshot.CreateFromTemplate.
			dialer := envdclient.NewSerialDialer(filepath.Join(v.run, "envd.sock"), envdclient.SerialOptions{Stale: true})
			c := envdclient.New(dialer, envdclient.Options{})
			initStart := time.Now()
			if err := c.Init(ctx, envdclient.InitRequest{AccessToken: "t", Hostname: "h", Timestamp: time.Now()}); err != nil {
				b.Fatal(err)
			}
			s.add(mode+"-init", time.Since(initStart))
			res, err := c.Shell(ctx, "echo hello", 30*time.Second)
			if err != nil || string(res.Stdout) != "hello\n" {
				b.Fatalf("%s: first exec %q %v", mode, res.Stdout, err)
			}
			s.add(mode+"-restore-to-first-exec", time.Since(start))
			b.StopTimer()
			c.Close()
			dialer.Close()
			q.Close()
			p.kill()
			b.StartTimer()
		}
	}
	s.report(b)
	for _, mode := range modes {
		st, _ := os.Stat(filepath.Join(snaps[mode], "state"))
		b.ReportMetric(float64(st.Size())/(1<<20), mode+"-state-MiB")
	}
}

// protoVM is a QEMU microvm command line like the driver's (same devices
// and order), with the RAM backend as the variable.
type protoVM struct {
	mode                          string // stream or file
	accel, kernel, initrd, append string
	memMB                         int
	rootfs, run, ram              string
}

type protoProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *protoProc) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// start runs QEMU (paused for an incoming migration when incoming) and
// connects QMP.
func (v protoVM) start(b *testing.B, incoming bool) (*protoProc, *qemu.QMP) {
	args := []string{
		"-M", "microvm,x-option-roms=off", "-accel", v.accel, "-cpu", "max",
		"-m", fmt.Sprint(v.memMB), "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none",
		"-global", "virtio-mmio.force-legacy=false",
		"-kernel", v.kernel, "-initrd", v.initrd, "-append", v.append, "-no-reboot",
		"-drive", "id=root,file=" + v.rootfs + ",format=raw,if=none,cache=writeback",
		"-device", "virtio-blk-device,drive=root",
		"-chardev", "socket,id=envd,path=" + v.run + "/envd.sock,server=on,wait=off",
		"-device", "virtio-serial-device",
		"-device", "virtserialport,chardev=envd,name=org.wrenn.envd",
		"-serial", "file:" + v.run + "/serial.log",
		"-qmp", "unix:" + v.run + "/qmp.sock,server=on,wait=off",
	}
	if v.mode == "file" {
		// share=on while the template runs (its RAM is the file),
		// share=off for sandboxes (private copy-on-write mappings).
		share := "on"
		if incoming {
			share = "off"
		}
		args[1] += ",memory-backend=ram0"
		args = append(args, "-object", fmt.Sprintf("memory-backend-file,id=ram0,size=%dM,mem-path=%s,share=%s", v.memMB, v.ram, share))
	}
	if incoming {
		args = append(args, "-incoming", "defer")
	}
	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &protoProc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	b.Cleanup(p.kill)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		q, err := qemu.DialQMP(ctx, filepath.Join(v.run, "qmp.sock"))
		if err == nil {
			return p, q
		}
		select {
		case <-p.done:
			b.Fatalf("qemu exited: %v", cmd.ProcessState)
		case <-ctx.Done():
			b.Fatalf("qmp: %v", err)
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// protoTemplate boots the template in mode, waits for envd, runs the
// warm-up, quiesces the channel and saves state (+ rootfs copy) into a
// directory it returns.
func protoTemplate(b *testing.B, ctx context.Context, base protoVM, mode, rootfs string) string {
	dir := shortTempDir(b)
	v := base
	v.mode, v.run, v.ram = mode, shortTempDir(b), filepath.Join(dir, "mem.ram")
	v.rootfs = filepath.Join(v.run, "rootfs.ext4")
	if _, err := filesystem.Clone(ctx, rootfs, v.rootfs); err != nil {
		b.Fatal(err)
	}
	p, q := v.start(b, false)
	defer p.kill()
	dialer := envdclient.NewSerialDialer(filepath.Join(v.run, "envd.sock"), envdclient.SerialOptions{})
	c := envdclient.New(dialer, envdclient.Options{})
	hctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, _, err := c.WaitHealthy(hctx, envdclient.Backoff{}); err != nil {
		b.Fatal(err)
	}
	if _, err := c.Shell(ctx, "true", 30*time.Second); err != nil {
		b.Fatal(err)
	}
	c.Close()
	release, err := dialer.Quiesce(hctx)
	if err != nil {
		b.Fatal(err)
	}
	defer release()
	if err := q.Execute(ctx, "stop", nil, nil); err != nil {
		b.Fatal(err)
	}
	protoSetCaps(b, ctx, q, mode)
	if err := q.Execute(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": int64(10 << 30)}, nil); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := q.Execute(ctx, "migrate", map[string]any{"uri": "exec:cat > " + filepath.Join(dir, "state")}, nil); err != nil {
		b.Fatal(err)
	}
	protoWaitMigration(b, ctx, q)
	b.Logf("%s: snapshot saved in %v", mode, time.Since(start))
	if _, err := filesystem.Clone(ctx, v.rootfs, filepath.Join(dir, "rootfs.ext4")); err != nil {
		b.Fatal(err)
	}
	q.Close()
	return dir
}

func protoSetCaps(b *testing.B, ctx context.Context, q *qemu.QMP, mode string) {
	if mode != "file" {
		return
	}
	caps := []map[string]any{{"capability": "x-ignore-shared", "state": true}}
	if err := q.Execute(ctx, "migrate-set-capabilities", map[string]any{"capabilities": caps}, nil); err != nil {
		b.Fatal(err)
	}
}

func protoWaitMigration(b *testing.B, ctx context.Context, q *qemu.QMP) {
	for {
		mi, err := q.QueryMigrate(ctx)
		if err != nil {
			b.Fatal(err)
		}
		switch mi.Status {
		case "completed":
			return
		case "failed", "cancelled":
			b.Fatalf("migration %s: %s", mi.Status, mi.ErrorDesc)
		}
		time.Sleep(time.Millisecond)
	}
}

// shortTempDir is a temp dir with a short path (unix sockets live in it).
func shortTempDir(b testing.TB) string {
	d, err := os.MkdirTemp("", "wr-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}
