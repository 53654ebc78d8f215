package imagebuild

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testModulesDep = `kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/char/hw_random/virtio-rng.ko.gz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/a.ko: kernel/fs/b.ko
kernel/fs/b.ko: kernel/fs/a.ko
kernel/fs/orphan.ko: kernel/fs/missing.ko
`

func testModuleDB(t *testing.T) *ModuleDB {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, data []byte) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("modules.dep", []byte(testModulesDep))
	write("modules.builtin", []byte("kernel/fs/ext4/ext4.ko\nkernel/fs/jbd2/jbd2.ko\n"))
	for _, l := range strings.Split(testModulesDep, "\n") {
		if f, _, ok := strings.Cut(l, ":"); ok && strings.HasSuffix(f, ".ko") {
			write(f, []byte("ELF "+ModuleName(f)))
		}
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("ELF virtio_rng"))
	zw.Close()
	write("kernel/drivers/char/hw_random/virtio-rng.ko.gz", gz.Bytes())
	db, err := LoadModuleDB(dir)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/drivers/char/hw_random/virtio-rng.ko.xz": "virtio_rng",
		"virtio-rng":                 "virtio_rng",
		"kernel/fs/ext4/ext4.ko":     "ext4",
		"vmw_vsock_virtio_transport": "vmw_vsock_virtio_transport",
		"crc32c-intel.ko.zst":        "crc32c_intel",
	} {
		if got := ModuleName(in); got != want {
			t.Errorf("ModuleName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestResolve(t *testing.T) {
	db := testModuleDB(t)
	tests := []struct {
		name string
		want []string
		out  string
		err  error
	}{
		{"deps first", []string{"virtio_net"}, "failover net_failover virtio_ring virtio virtio_net", nil},
		{"shared deps once", []string{"virtio_mmio", "virtio_net", "virtio-rng"},
			"virtio_ring virtio virtio_mmio failover net_failover virtio_net virtio_rng", nil},
		{"builtin skipped", []string{"ext4", "virtio_ring"}, "virtio_ring", nil},
		{"unknown", []string{"nosuch"}, "", ErrModuleNotFound},
		{"missing dependency", []string{"orphan"}, "", ErrModuleNotFound},
		{"cycle", []string{"a"}, "", errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := db.Resolve(tt.want)
			switch {
			case tt.err == nil && err != nil:
				t.Fatal(err)
			case tt.err == errAny && err == nil, tt.err != nil && tt.err != errAny && !errors.Is(err, tt.err):
				t.Fatalf("error %v, want %v", err, tt.err)
			}
			if tt.err == nil && strings.Join(got, " ") != tt.out {
				t.Fatalf("order %q, want %q", strings.Join(got, " "), tt.out)
			}
		})
	}
}

func TestReadModule(t *testing.T) {
	db := testModuleDB(t)
	for name, want := range map[string]string{"virtio": "ELF virtio", "virtio_rng": "ELF virtio_rng"} {
		got, err := db.ReadModule(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	if _, err := db.ReadModule(context.Background(), "nosuch"); !errors.Is(err, ErrModuleNotFound) {
		t.Fatalf("missing module: %v", err)
	}
}

func TestVersionLess(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"6.1.0-57-cloud-amd64", "6.1.0-123-cloud-amd64", true},
		{"6.1.0-123-cloud-amd64", "6.1.0-57-cloud-amd64", false},
		{"5.10.0-1-cloud-amd64", "6.1.0-1-cloud-amd64", true},
		{"6.1.0-1-cloud-amd64", "6.1.0-1-cloud-amd64", false},
	}
	for _, tt := range tests {
		if got := versionLess(tt.a, tt.b); got != tt.want {
			t.Errorf("versionLess(%s, %s) = %v", tt.a, tt.b, got)
		}
	}
}

func TestFindKernel(t *testing.T) {
	boot, mods := t.TempDir(), t.TempDir()
	for _, v := range []string{"6.1.0-9-cloud-amd64", "6.1.0-57-cloud-amd64", "6.1.0-60-cloud-amd64"} {
		if err := os.WriteFile(filepath.Join(boot, "vmlinuz-"+v), []byte("k"), 0o644); err != nil {
			t.Fatal(err)
		}
		if v == "6.1.0-60-cloud-amd64" {
			continue // image without modules: not usable
		}
		if err := os.MkdirAll(filepath.Join(mods, v), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(mods, v, "modules.dep"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	paths := KernelPaths{BootDir: boot, ModulesDir: mods}
	k, err := FindKernel(paths, "")
	if err != nil {
		t.Fatal(err)
	}
	if k.Version != "6.1.0-57-cloud-amd64" {
		t.Fatalf("picked %s", k.Version)
	}
	if _, err := FindKernel(paths, "6.1.0-60-cloud-amd64"); !errors.Is(err, ErrNoKernel) {
		t.Fatalf("kernel without modules: %v", err)
	}
	if _, err := FindKernel(KernelPaths{BootDir: t.TempDir(), ModulesDir: mods}, ""); !errors.Is(err, ErrNoKernel) {
		t.Fatalf("empty boot dir: %v", err)
	}
}
