package snapshot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// Defaults.
const (
	DefaultVCPUs        = 1
	DefaultMemoryMB     = 256
	DefaultKernelArgs   = "quiet"
	DefaultReadyTimeout = time.Minute
	// DefaultWarmup runs in the template VM before it is snapshotted, so
	// the shell and envd's process path are in the guest's page cache (and
	// so in the snapshot) when a sandbox's first command runs.
	DefaultWarmup = "true"
)

// maxBuild bounds one template snapshot build, whoever waits for it.
const maxBuild = 10 * time.Minute

// Images resolves templates; *filesystem.Registry implements it.
type Images interface {
	Resolve(template, version string) (filesystem.Image, error)
}

// Config configures a TemplateManager.
type Config struct {
	Driver vm.Driver
	Images Images
	// CacheDir holds the template snapshots, one directory per Key. It
	// must be on the same filesystem as the sandboxes' rootfs clones for
	// reflinks to work. Keep the path short: the template VM's sockets
	// live below it (unix socket paths are limited to 107 bytes).
	CacheDir string
	// VCPUs and MemoryMB of template VMs (and so of every sandbox made
	// from them); defaults 1 and 256.
	VCPUs    int
	MemoryMB int
	// KernelArgs are added to the driver's kernel command line for
	// template boots; default "quiet".
	KernelArgs string
	// Warmup is a shell command run in the template VM (through envd)
	// before the snapshot; default "true". "-" runs nothing.
	Warmup string
	// BootTimeout bounds one boot attempt of a template VM (the driver's
	// own default when 0).
	BootTimeout time.Duration
	// ReadyTimeout bounds waiting for envd: healthy after the template's
	// cold boot, answering /init after a restore. Default one minute.
	ReadyTimeout time.Duration
	Log          *slog.Logger
}

// TemplateManager builds template snapshots and creates sandboxes from
// them. Safe for concurrent use.
type TemplateManager struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	builds map[string]*buildCall // by Key.DirName
	builtN int                   // snapshots built by this manager (for tests and metrics)
}

// buildCall is one in-flight Ensure; later callers wait on done.
type buildCall struct {
	done chan struct{}
	t    *Template
	err  error
}

// New returns a manager; it creates CacheDir if needed.
func New(cfg Config) (*TemplateManager, error) {
	if cfg.Driver == nil || cfg.Images == nil || cfg.CacheDir == "" {
		return nil, errors.New("template manager: driver, images and cache dir are required")
	}
	if cfg.VCPUs <= 0 {
		cfg.VCPUs = DefaultVCPUs
	}
	if cfg.MemoryMB <= 0 {
		cfg.MemoryMB = DefaultMemoryMB
	}
	if cfg.KernelArgs == "" {
		cfg.KernelArgs = DefaultKernelArgs
	}
	switch cfg.Warmup {
	case "":
		cfg.Warmup = DefaultWarmup
	case "-":
		cfg.Warmup = ""
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(cfg.CacheDir)
	if err != nil {
		return nil, fmt.Errorf("template cache dir: %w", err)
	}
	cfg.CacheDir = abs
	if err := os.MkdirAll(abs, 0o750); err != nil {
		return nil, fmt.Errorf("template cache dir: %w", err)
	}
	return &TemplateManager{cfg: cfg, log: cfg.Log, builds: map[string]*buildCall{}}, nil
}

// Built is how many template snapshots this manager has built (not found
// in the cache).
func (m *TemplateManager) Built() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.builtN
}

// KeyFor resolves a template and returns the key of its snapshot.
func (m *TemplateManager) KeyFor(template, version string) (Key, filesystem.Image, error) {
	im, err := m.cfg.Images.Resolve(template, version)
	if err != nil {
		return Key{}, im, err
	}
	return Key{
		Template: im.Template, Version: im.Version, Image: im.CacheKey(),
		Driver: m.cfg.Driver.Name(), VCPUs: m.cfg.VCPUs, MemoryMB: m.cfg.MemoryMB,
		KernelArgs: m.cfg.KernelArgs, Warmup: m.cfg.Warmup, Meta: metaVersion,
		MemoryFile: m.cfg.Driver.Capabilities().MemoryFile,
	}, im, nil
}

// Ensure returns the template's snapshot, building it first when the cache
// has none. Concurrent calls for the same snapshot share one build; a
// failed build is not cached (the next call tries again).
func (m *TemplateManager) Ensure(ctx context.Context, template, version string) (*Template, error) {
	if !m.cfg.Driver.Capabilities().Snapshot {
		return nil, fmt.Errorf("template %s: driver %s: %w", template, m.cfg.Driver.Name(), vm.ErrNotSupported)
	}
	key, im, err := m.KeyFor(template, version)
	if err != nil {
		return nil, fmt.Errorf("resolve image: %w", err)
	}
	dir := filepath.Join(m.cfg.CacheDir, key.DirName())
	if t, ok, err := readMeta(dir, key); ok || err != nil {
		if t != nil {
			t.Image = im
		}
		return t, err
	}
	name := key.DirName()
	m.mu.Lock()
	if c, ok := m.builds[name]; ok {
		m.mu.Unlock()
		select {
		case <-c.done:
			return c.t, c.err
		case <-ctx.Done():
			return nil, fmt.Errorf("template %s: wait for its snapshot: %w", template, ctx.Err())
		}
	}
	c := &buildCall{done: make(chan struct{})}
	m.builds[name] = c
	m.mu.Unlock()

	// The build runs to completion even if this caller gives up: others
	// may be waiting for it. It is bounded by its own timeouts.
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), maxBuild)
	c.t, c.err = m.buildLocked(bctx, key, im, dir)
	cancel()
	m.mu.Lock()
	delete(m.builds, name)
	m.mu.Unlock()
	close(c.done)
	return c.t, c.err
}

// buildLocked takes the cache directory's lock for key (another process
// may be building it), checks the cache again and builds.
func (m *TemplateManager) buildLocked(ctx context.Context, key Key, im filesystem.Image, dir string) (*Template, error) {
	unlock, err := lockFile(ctx, dir+".lock")
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", key.Template, err)
	}
	defer unlock()
	if t, ok, err := readMeta(dir, key); ok || err != nil {
		if t != nil {
			t.Image = im
		}
		return t, err
	}
	t, err := m.build(ctx, key, im, dir)
	if err != nil {
		return nil, fmt.Errorf("build snapshot of template %s %s: %w", key.Template, key.Version, err)
	}
	m.mu.Lock()
	m.builtN++
	m.mu.Unlock()
	return t, nil
}

// build boots the template, waits for envd, runs the warm-up, snapshots
// and moves the finished snapshot to dir. Everything is made under a
// private work directory that is removed on every path.
func (m *TemplateManager) build(ctx context.Context, key Key, im filesystem.Image, dir string) (*Template, error) {
	start := time.Now()
	work, err := os.MkdirTemp(m.cfg.CacheDir, ".build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	snapDir := filepath.Join(work, "snap")
	runDir := filepath.Join(work, "run")
	for _, d := range []string{snapDir, runDir} {
		if err := os.Mkdir(d, 0o750); err != nil {
			return nil, err
		}
	}
	rootfs := filepath.Join(work, "rootfs.ext4")
	if _, err := filesystem.Clone(ctx, im.Rootfs, rootfs); err != nil {
		return nil, err
	}
	id := "tmpl-" + key.hash() + "-" + randHex(3)
	log := m.log.With("template", key.Template, "version", key.Version, "vm_id", id)
	log.Info("building template snapshot", "dir", dir)
	spec := vm.Spec{
		ID: id, VCPUs: key.VCPUs, MemoryMB: key.MemoryMB,
		Kernel: im.Kernel.Image, Initrd: im.Kernel.Initrd, KernelArgs: key.KernelArgs,
		Rootfs: rootfs, RunDir: runDir, BootTimeout: m.cfg.BootTimeout,
	}
	if key.MemoryFile {
		// The template's RAM is a file in the snapshot directory (moved
		// with it below); restores map it copy-on-write. The template VM
		// is destroyed after its snapshot, so the file never changes.
		spec.MemoryFile = filepath.Join(snapDir, MemoryFile)
	}
	inst, err := m.cfg.Driver.Create(ctx, spec)
	if err != nil {
		return nil, err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := inst.Destroy(dctx); err != nil {
			log.Error("destroy template vm", "err", err)
		}
	}()
	c := envdclient.New(inst, envdclient.Options{Log: log})
	defer c.Close()
	hctx, cancel := context.WithTimeout(ctx, m.cfg.ReadyTimeout)
	_, _, err = c.WaitHealthy(hctx, envdclient.Backoff{})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("envd in the template vm: %w", err)
	}
	bootTook := time.Since(start)
	if key.Warmup != "" {
		res, err := c.Shell(ctx, key.Warmup, m.cfg.ReadyTimeout)
		if err != nil {
			return nil, fmt.Errorf("warm-up %q: %w", key.Warmup, err)
		}
		if res.ExitCode != 0 {
			return nil, fmt.Errorf("warm-up %q: exit %d: %s", key.Warmup, res.ExitCode, res.Stderr)
		}
	}
	c.Close()
	info, err := inst.Snapshot(ctx, snapDir)
	if err != nil {
		return nil, err
	}
	t := &Template{
		Key: key, Image: im, BuiltAt: time.Now().UTC(),
		BootTook: bootTook, BuildTook: time.Since(start), Snapshot: info,
	}
	if err := writeMeta(snapDir, t); err != nil {
		return nil, err
	}
	// Replace a leftover of an interrupted or outdated build, then move
	// the finished snapshot in with one rename.
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.Rename(snapDir, dir); err != nil {
		return nil, err
	}
	t.Dir = dir
	t.Snapshot.Dir = dir
	log.Info("template snapshot built", "boot_took", bootTook, "took", t.BuildTook,
		"mem_bytes", info.MemBytes, "disk_bytes", info.DiskBytes)
	return t, nil
}

// lockFile takes an exclusive flock on path, waiting for ctx.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	delay := 5 * time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		}
		delay = min(delay*2, 200*time.Millisecond)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
