package hostagent

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/agentstate"
	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/hostagent/sandbox"
	"github.com/wrenn-dev/wrenn-sandbox/internal/network"
	"github.com/wrenn-dev/wrenn-sandbox/internal/snapshot"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// templatesAdapter is internal/snapshot behind sandbox.TemplateSnapshots.
// A template snapshot fixes vCPUs and memory, so there is one
// TemplateManager per shape, all sharing one cache directory (the cache
// key includes the shape).
type templatesAdapter struct {
	driver      vm.Driver
	kernelArgs  string
	images      snapshot.Images
	cacheDir    string
	bootTimeout time.Duration
	log         *slog.Logger
	// hasNIC reports whether the snapshot in dir has a network card;
	// sandboxes always get one, so a snapshot without cannot serve them.
	hasNIC func(dir string) bool

	mu      sync.Mutex
	mgrs    map[[2]int]*snapshot.TemplateManager
	noNIC   map[string]bool // cache dirs found without a network card
	lastErr error
}

// newTemplatesAdapter wraps driver so that template VMs boot with a
// network card (see templateNetDriver) when net is set.
func newTemplatesAdapter(driver vm.Driver, net *netAdapter, images snapshot.Images, cacheDir string, bootTimeout time.Duration,
	hasNIC func(string) bool, log *slog.Logger) *templatesAdapter {
	kargs := ""
	if net != nil {
		driver = &templateNetDriver{Driver: driver, net: net, log: log}
		// The guest configures eth0 from the command line at boot; the
		// argument is part of the snapshot's cache key, so snapshots made
		// without a network card are not reused.
		kargs = snapshot.DefaultKernelArgs + " ip=" + network.KernelIPArg()
	}
	return &templatesAdapter{
		driver: driver, kernelArgs: kargs, images: images, cacheDir: cacheDir, bootTimeout: bootTimeout, hasNIC: hasNIC,
		log: log, mgrs: map[[2]int]*snapshot.TemplateManager{}, noNIC: map[string]bool{},
	}
}

func (a *templatesAdapter) manager(vcpus, memoryMB int) (*snapshot.TemplateManager, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := [2]int{vcpus, memoryMB}
	if m, ok := a.mgrs[k]; ok {
		return m, nil
	}
	m, err := snapshot.New(snapshot.Config{
		Driver: a.driver, Images: a.images, CacheDir: a.cacheDir, KernelArgs: a.kernelArgs,
		VCPUs: vcpus, MemoryMB: memoryMB, BootTimeout: a.bootTimeout, Log: a.log,
	})
	if err != nil {
		return nil, err
	}
	a.mgrs[k] = m
	return m, nil
}

func (a *templatesAdapter) Usable(template string, vcpus, memoryMB int) bool {
	if !a.driver.Capabilities().Snapshot {
		return false
	}
	m, err := a.manager(vcpus, memoryMB)
	if err != nil {
		return false
	}
	key, _, err := m.KeyFor(template, "")
	if err != nil {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.noNIC[key.DirName()]
}

func (a *templatesAdapter) Prepare(ctx context.Context, template string, vcpus, memoryMB int) error {
	m, err := a.manager(vcpus, memoryMB)
	if err != nil {
		return err
	}
	_, err = m.Ensure(ctx, template, "")
	return err
}

func (a *templatesAdapter) Create(ctx context.Context, c sandbox.TemplateCreate) (vm.Instance, *envdclient.Client, error) {
	m, err := a.manager(c.VCPUs, c.MemoryMB)
	if err != nil {
		return nil, nil, err
	}
	t, err := m.Ensure(ctx, c.Template, "")
	if err != nil {
		return nil, nil, fmt.Errorf("template snapshot: %w", err)
	}
	if c.Net != nil && a.hasNIC != nil && !a.hasNIC(t.Dir) {
		a.mu.Lock()
		a.noNIC[t.Key.DirName()] = true
		a.mu.Unlock()
		return nil, nil, fmt.Errorf("%w: snapshot %s has no network card", sandbox.ErrTemplateUnusable, t.Dir)
	}
	sb, err := m.CreateFromTemplate(ctx, snapshot.CreateSpec{
		ID: c.SandboxID, Template: c.Template, RunDir: c.RunDir, Rootfs: c.Rootfs, Net: c.Net, Init: c.Init,
		Placement: c.Placement,
	})
	if err != nil {
		return nil, nil, err
	}
	return sb.Instance, sb.Envd, nil
}

// templateNetDriver gives the VMs the template manager boots (templates,
// whose snapshots every sandbox restores) a network card: a TAP in a
// network namespace of their own, with egress denied, released when the
// template VM is destroyed. A snapshot keeps its device list, and a
// sandbox always has a network, so its template must have had one. Every
// other call goes to the wrapped driver unchanged.
type templateNetDriver struct {
	vm.Driver
	net *netAdapter
	log *slog.Logger
}

func (d *templateNetDriver) Create(ctx context.Context, spec vm.Spec) (vm.Instance, error) {
	if spec.Net != nil {
		return d.Driver.Create(ctx, spec)
	}
	ni, err := d.net.Setup(ctx, spec.ID, agentstate.NetworkPolicy{DenyAll: true})
	if err != nil {
		return nil, fmt.Errorf("template vm network: %w", err)
	}
	release := func(ctx context.Context) {
		if err := d.net.Teardown(context.WithoutCancel(ctx), spec.ID, ni.Handle); err != nil {
			d.log.Error("tear down template vm network", "vm_id", spec.ID, "err", err)
		}
	}
	spec.Net = &vm.NetSpec{TapName: ni.Tap, NetNS: ni.NetNS}
	inst, err := d.Driver.Create(ctx, spec)
	if err != nil {
		release(ctx)
		return nil, err
	}
	return &netInstance{Instance: inst, release: release}, nil
}

// netInstance releases its network after the VM is destroyed.
type netInstance struct {
	vm.Instance
	once    sync.Once
	release func(context.Context)
}

func (i *netInstance) Destroy(ctx context.Context) error {
	err := i.Instance.Destroy(ctx)
	if err == nil {
		i.once.Do(func() { i.release(ctx) })
	}
	return err
}

// Reset forwards to the wrapped instance's envd channel (envdclient
// calls it after a snapshot).
func (i *netInstance) Reset() {
	if r, ok := i.Instance.(interface{ Reset() }); ok {
		r.Reset()
	}
}
