package config

import (
	"errors"
	"net/netip"
	"time"
)

// VMM choices for Agent.VMM (AGENT_VMM).
const (
	VMMAuto        = "auto" // firecracker where its binary and a usable /dev/kvm exist, else qemu
	VMMFirecracker = "firecracker"
	VMMQEMU        = "qemu"
)

// Template snapshot policies for Agent.TemplateSnapshots.
const (
	TemplateSnapshotsLazy  = "lazy"  // made on a template's first create
	TemplateSnapshotsStart = "start" // made for every template when the agent starts
	TemplateSnapshotsOff   = "off"   // always cold boot
)

// Agent is the host agent's configuration. Zero totals mean "derive from
// the machine" (see the hostagent package).
type Agent struct {
	ListenAddr  string // AGENT_LISTEN_ADDR, gRPC (mTLS); default :50051
	MetricsAddr string // AGENT_METRICS_ADDR, plain HTTP /metrics; "off" disables; default 127.0.0.1:9464
	HostID      string // AGENT_HOST_ID; default: derived from the host name

	VMM            string // AGENT_VMM: auto | firecracker | qemu
	QEMUBin        string // AGENT_QEMU_BIN; default qemu-system-x86_64 from PATH
	QEMUAccel      string // AGENT_QEMU_ACCEL: auto | kvm | tcg
	FirecrackerBin string // AGENT_FIRECRACKER_BIN; default firecracker from PATH
	JailerBin      string // AGENT_JAILER_BIN; "" runs firecracker without the jailer

	ImagesPath    string // AGENT_IMAGES_PATH: kernel/ and templates/<name>/ (images/build.sh output)
	KernelPath    string // AGENT_KERNEL_PATH: overrides the kernel from ImagesPath/kernel
	SandboxesPath string // AGENT_SANDBOXES_PATH: one directory per sandbox (state, disk, sockets)
	SnapshotsPath string // AGENT_SNAPSHOTS_PATH: sandbox snapshots and hibernation images
	TemplateCache string // AGENT_TEMPLATE_CACHE_PATH: template memory snapshots

	NetworkPool   netip.Prefix // AGENT_NETWORK_POOL: host-side /30s come from here; default 10.0.0.0/16
	NetworkHostNS string       // AGENT_NETWORK_HOST_NS: namespace the agent treats as the host side ("" = its own)
	NetworkPrefix string       // AGENT_NETWORK_NAME_PREFIX: starts namespace, veth and table names; default wrn
	HostInterface string       // AGENT_HOST_INTERFACE: uplink for NAT ("" = any)
	DNSServers    []string     // AGENT_DNS: comma-separated name servers given to guests

	TotalVCPUs       int     // AGENT_TOTAL_VCPUS; 0 = CPUs x AGENT_VCPU_OVERCOMMIT
	VCPUOvercommit   float64 // AGENT_VCPU_OVERCOMMIT; default 4
	TotalMemoryMB    int64   // AGENT_TOTAL_MEMORY_MB; 0 = MemTotal - AGENT_RESERVED_MEMORY_MB
	ReservedMemoryMB int64   // AGENT_RESERVED_MEMORY_MB; default 1024
	TotalDiskMB      int64   // AGENT_TOTAL_DISK_MB; 0 = size of the sandboxes file system

	DefaultVCPUs    int    // AGENT_DEFAULT_VCPUS; default 1
	DefaultMemoryMB int    // AGENT_DEFAULT_MEMORY_MB; default 512
	DefaultTemplate string // AGENT_DEFAULT_TEMPLATE; default minimal

	TemplateSnapshots string        // AGENT_TEMPLATE_SNAPSHOTS: lazy | start | off
	BootTimeout       time.Duration // AGENT_BOOT_TIMEOUT: VM start to envd healthy; default 60s
	CgroupParent      string        // AGENT_CGROUP_PARENT; default wrenn

	TLS TLSFiles // AGENT_TLS_CA, AGENT_TLS_CERT, AGENT_TLS_KEY (all required)

	ShutdownTimeout time.Duration // AGENT_SHUTDOWN_TIMEOUT: graceful stop before a hard stop; default 10s
	LogLevel        string        // AGENT_LOG_LEVEL: debug | info | warn | error
	LogFormat       string        // AGENT_LOG_FORMAT: text | json

	// TestPauseCreateAt (AGENT_TEST_PAUSE_CREATE_AT) makes every create
	// stop at the named step and wait until the agent dies; crash tests
	// use it to kill the agent mid-create. Never set in production.
	TestPauseCreateAt string
}

// TLSFiles names PEM files.
type TLSFiles struct {
	CA   string // the CA that signs peers' certificates
	Cert string // own certificate (chain)
	Key  string // own private key
}

// LoadAgent reads the agent's configuration.
func LoadAgent(get Getenv) (Agent, error) {
	r := &envReader{get: get}
	a := Agent{
		ListenAddr:  r.str("AGENT_LISTEN_ADDR", ":50051"),
		MetricsAddr: r.str("AGENT_METRICS_ADDR", "127.0.0.1:9464"),
		HostID:      r.str("AGENT_HOST_ID", ""),

		VMM:            r.oneOf("AGENT_VMM", VMMAuto, VMMAuto, VMMFirecracker, VMMQEMU),
		QEMUBin:        r.str("AGENT_QEMU_BIN", ""),
		QEMUAccel:      r.oneOf("AGENT_QEMU_ACCEL", "auto", "auto", "kvm", "tcg"),
		FirecrackerBin: r.str("AGENT_FIRECRACKER_BIN", ""),
		JailerBin:      r.str("AGENT_JAILER_BIN", ""),

		ImagesPath:    r.str("AGENT_IMAGES_PATH", "/var/lib/wrenn/images"),
		KernelPath:    r.str("AGENT_KERNEL_PATH", ""),
		SandboxesPath: r.str("AGENT_SANDBOXES_PATH", "/var/lib/wrenn/sandboxes"),
		SnapshotsPath: r.str("AGENT_SNAPSHOTS_PATH", "/var/lib/wrenn/snapshots"),
		TemplateCache: r.str("AGENT_TEMPLATE_CACHE_PATH", "/var/lib/wrenn/template-snapshots"),

		NetworkPool:   r.prefix("AGENT_NETWORK_POOL", "10.0.0.0/16"),
		NetworkHostNS: r.str("AGENT_NETWORK_HOST_NS", ""),
		NetworkPrefix: r.str("AGENT_NETWORK_NAME_PREFIX", ""),
		HostInterface: r.str("AGENT_HOST_INTERFACE", ""),
		DNSServers:    r.list("AGENT_DNS"),

		TotalVCPUs:       int(r.int("AGENT_TOTAL_VCPUS", 0)),
		VCPUOvercommit:   r.float("AGENT_VCPU_OVERCOMMIT", 4),
		TotalMemoryMB:    r.int("AGENT_TOTAL_MEMORY_MB", 0),
		ReservedMemoryMB: r.int("AGENT_RESERVED_MEMORY_MB", 1024),
		TotalDiskMB:      r.int("AGENT_TOTAL_DISK_MB", 0),

		DefaultVCPUs:    int(r.int("AGENT_DEFAULT_VCPUS", 1)),
		DefaultMemoryMB: int(r.int("AGENT_DEFAULT_MEMORY_MB", 512)),
		DefaultTemplate: r.str("AGENT_DEFAULT_TEMPLATE", "minimal"),

		TemplateSnapshots: r.oneOf("AGENT_TEMPLATE_SNAPSHOTS", TemplateSnapshotsLazy,
			TemplateSnapshotsLazy, TemplateSnapshotsStart, TemplateSnapshotsOff),
		BootTimeout:  r.duration("AGENT_BOOT_TIMEOUT", 60*time.Second),
		CgroupParent: r.str("AGENT_CGROUP_PARENT", "wrenn"),

		TLS: TLSFiles{
			CA:   r.str("AGENT_TLS_CA", ""),
			Cert: r.str("AGENT_TLS_CERT", ""),
			Key:  r.str("AGENT_TLS_KEY", ""),
		},

		ShutdownTimeout: r.duration("AGENT_SHUTDOWN_TIMEOUT", 10*time.Second),
		LogLevel:        r.oneOf("AGENT_LOG_LEVEL", "info", "debug", "info", "warn", "error"),
		LogFormat:       r.oneOf("AGENT_LOG_FORMAT", "text", "text", "json"),

		TestPauseCreateAt: r.str("AGENT_TEST_PAUSE_CREATE_AT", ""),
	}
	if r.err != nil {
		return a, r.err
	}
	return a, a.Validate()
}

// Validate checks what LoadAgent cannot check field by field.
func (a Agent) Validate() error {
	var errs []error
	if a.TLS.CA == "" || a.TLS.Cert == "" || a.TLS.Key == "" {
		errs = append(errs, errors.New("AGENT_TLS_CA, AGENT_TLS_CERT and AGENT_TLS_KEY are required (mTLS is not optional; `host-agent certs` makes dev ones)"))
	}
	if a.ListenAddr == "" {
		errs = append(errs, errors.New("AGENT_LISTEN_ADDR is empty"))
	}
	if a.NetworkPool.IsValid() && a.NetworkPool.Bits() > 30 {
		errs = append(errs, errors.New("AGENT_NETWORK_POOL must hold at least one /30"))
	}
	if a.DefaultVCPUs < 1 || a.DefaultMemoryMB < 64 {
		errs = append(errs, errors.New("AGENT_DEFAULT_VCPUS must be >= 1 and AGENT_DEFAULT_MEMORY_MB >= 64"))
	}
	for _, p := range []struct{ name, v string }{
		{"AGENT_SANDBOXES_PATH", a.SandboxesPath}, {"AGENT_IMAGES_PATH", a.ImagesPath},
		{"AGENT_SNAPSHOTS_PATH", a.SnapshotsPath}, {"AGENT_TEMPLATE_CACHE_PATH", a.TemplateCache},
	} {
		if p.v == "" || p.v[0] != '/' {
			errs = append(errs, errors.New(p.name+" must be an absolute path"))
		}
	}
	return errors.Join(errs...)
}
