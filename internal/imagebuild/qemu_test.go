package imagebuild

import (
	"strings"
	"testing"
)

func TestParseCPUMHz(t *testing.T) {
	tests := []struct {
		in   string
		want int
		ok   bool
	}{
		{"processor\t: 0\ncpu MHz\t\t: 2596.142\ncache size\t: 1 KB\ncpu MHz\t\t: 1.0\n", 2596142, true},
		{"cpu MHz : 3000\n", 3000000, true},
		{"cpu MHz : fast\n", 0, false},
		{"processor : 0\n", 0, false},
	}
	for _, tt := range tests {
		got, err := parseCPUMHz(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseCPUMHz(%q) = %d, %v; want %d ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestTCGAppend(t *testing.T) {
	tests := []struct {
		line string
		khz  int
		want string
	}{
		{"console=ttyS0 quiet", 2000000, "console=ttyS0 quiet tsc_early_khz=2000000"},
		{"console=ttyS0 tsc_early_khz=1", 2000000, "console=ttyS0 tsc_early_khz=1"},
	}
	for _, tt := range tests {
		if got := TCGAppend(tt.line, tt.khz); got != tt.want {
			t.Errorf("TCGAppend(%q, %d) = %q, want %q", tt.line, tt.khz, got, tt.want)
		}
	}
	if got := TCGAppend("x", 0); !strings.Contains(got, "tsc_early_khz=") {
		t.Errorf("host rate not added: %q", got)
	}
	args := strings.Join(BootSpec{Kernel: "k", Rootfs: "r", Accel: "kvm"}.Args(), " ")
	if strings.Contains(args, "tsc_early_khz") || !strings.Contains(args, "-cpu host") {
		t.Errorf("kvm command line: %s", args)
	}
	args = strings.Join(BootSpec{Kernel: "k", Rootfs: "r", TSCKHz: -1}.Args(), " ")
	if strings.Contains(args, "tsc_early_khz") {
		t.Errorf("TSCKHz -1 still adds the option: %s", args)
	}
}
