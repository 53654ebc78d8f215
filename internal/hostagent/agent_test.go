package hostagent

import (
	"slices"
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/config"
)

func TestHelpers(t *testing.T) {
	if got := protectedPorts(":50051", "127.0.0.1:9464", "off", "bad"); !slices.Equal(got, []uint16{50051, 9464}) {
		t.Errorf("protectedPorts = %v", got)
	}
	for in, want := range map[string]string{"": "", "wrn-host": "/var/run/netns/wrn-host", "/run/netns/x": "/run/netns/x"} {
		if got := hostNSPath(in); got != want {
			t.Errorf("hostNSPath(%q) = %q, want %q", in, got, want)
		}
	}
	mb, err := memTotalMB()
	if err != nil || mb < 64 {
		t.Fatalf("memTotalMB = %d, %v", mb, err)
	}
	tot, err := hostTotals(config.Agent{VCPUOvercommit: 2, ReservedMemoryMB: 32, SandboxesPath: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if tot.VCPUs < 2 || tot.MemoryMB != mb-32 || tot.DiskMB <= 0 {
		t.Fatalf("derived totals %+v", tot)
	}
	tot, _ = hostTotals(config.Agent{TotalVCPUs: 3, TotalMemoryMB: 100, TotalDiskMB: 7})
	if tot.VCPUs != 3 || tot.MemoryMB != 100 || tot.DiskMB != 7 {
		t.Fatalf("configured totals %+v", tot)
	}
}

func TestResolveVMM(t *testing.T) {
	tests := []struct {
		cfg  config.Agent
		want string
	}{
		{config.Agent{VMM: config.VMMQEMU}, config.VMMQEMU},
		{config.Agent{VMM: config.VMMFirecracker}, config.VMMFirecracker},
		// auto with a firecracker binary that does not exist: qemu.
		{config.Agent{VMM: config.VMMAuto, FirecrackerBin: "/nonexistent/firecracker"}, config.VMMQEMU},
	}
	for _, tt := range tests {
		if got, why := ResolveVMM(tt.cfg); got != tt.want {
			t.Errorf("ResolveVMM(%+v) = %s (%s), want %s", tt.cfg, got, why, tt.want)
		}
	}
}
