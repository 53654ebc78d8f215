package firecracker

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

func TestBootArgs(t *testing.T) {
	net := &vm.NetSpec{TapName: "tap0"}
	cases := []struct {
		name string
		cfg  Config
		spec vm.Spec
		want string
	}{
		{"defaults, no net", Config{}, vm.Spec{}, DefaultBootArgs},
		{"net adds ip=", Config{}, vm.Spec{Net: net},
			DefaultBootArgs + " ip=169.254.0.21::169.254.0.22:255.255.255.252::eth0:off"},
		{"custom address and caller args", Config{GuestCIDR: "10.9.0.2/24", Gateway: "10.9.0.1", BootArgs: "quiet loglevel=1"},
			vm.Spec{Net: net, KernelArgs: "init=/sbin/envd"},
			"quiet loglevel=1 ip=10.9.0.2::10.9.0.1:255.255.255.0::eth0:off init=/sbin/envd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Firecracker = "/bin/true"
			d, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := d.bootArgs(tc.spec); got != tc.want {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Firecracker: "firecracker"},
		{Firecracker: "/bin/fc", RootfsMode: "overlay"},
		{Firecracker: "/bin/fc", GuestCIDR: "nope"},
		{Firecracker: "/bin/fc", Jailer: &JailerConfig{Binary: "jailer"}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

// TestCloneFileSparse: the snapshot's rootfs copy keeps content and holes.
func TestCloneFileSparse(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteAt([]byte("head"), 0)
	_, _ = f.WriteAt([]byte("middle"), 32<<20)
	_, _ = f.WriteAt([]byte("tail"), 64<<20-4)
	f.Close()
	dst := filepath.Join(dir, "dst")
	n, err := cloneFile(src, dst)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if n != 64<<20 || !bytes.Equal(a, b) {
		t.Fatalf("copy differs (size %d)", n)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dst, &st); err != nil {
		t.Fatal(err)
	}
	if allocated := st.Blocks * 512; allocated > 8<<20 {
		t.Fatalf("copy is not sparse: %d bytes allocated for 3 small extents", allocated)
	}
	if _, err := cloneFile(src, dst); err == nil {
		t.Fatal("cloneFile overwrote an existing file")
	}
}
