package imagebuild

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// DefaultModules are the kernel modules the initramfs loads: the virtio-mmio
// transport, block, console/serial ports, network and vsock, entropy, plus
// ext4 (built into Debian's cloud kernel, in which case it is skipped).
var DefaultModules = []string{
	"virtio", "virtio_ring", "virtio_mmio",
	"virtio_blk", "virtio_console",
	"failover", "net_failover", "virtio_net",
	"vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport",
	"virtio_rng",
	"ext4",
}

// ErrModuleNotFound is returned for a requested module that is neither in
// modules.dep nor built into the kernel.
var ErrModuleNotFound = errors.New("kernel module not found")

// ModuleDB is what the initramfs builder needs from /lib/modules/<version>:
// each loadable module's file and dependencies, and the built-in list.
type ModuleDB struct {
	Dir     string              // /lib/modules/<version>
	files   map[string]string   // module name -> path relative to Dir
	deps    map[string][]string // module name -> dependency names
	builtin map[string]bool
}

// ModuleName normalises a module file or name: "kernel/drivers/char/hw_random/virtio-rng.ko.xz"
// and "virtio-rng" both become "virtio_rng".
func ModuleName(s string) string {
	b := path.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		b = strings.TrimSuffix(b, ext)
	}
	b = strings.TrimSuffix(b, ".ko")
	return strings.ReplaceAll(b, "-", "_")
}

// LoadModuleDB reads modules.dep and modules.builtin from dir.
func LoadModuleDB(dir string) (*ModuleDB, error) {
	db := &ModuleDB{Dir: dir, files: map[string]string{}, deps: map[string][]string{}, builtin: map[string]bool{}}
	dep, err := os.ReadFile(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	if err := db.parseDep(dep); err != nil {
		return nil, err
	}
	builtin, err := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read modules.builtin: %w", err)
	}
	for _, line := range strings.Split(string(builtin), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			db.builtin[ModuleName(line)] = true
		}
	}
	return db, nil
}

func (db *ModuleDB) parseDep(data []byte) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		file, rest, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("modules.dep line %d: missing colon", n)
		}
		name := ModuleName(file)
		db.files[name] = file
		var deps []string
		for _, d := range strings.Fields(rest) {
			deps = append(deps, ModuleName(d))
		}
		db.deps[name] = deps
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("scan modules.dep: %w", err)
	}
	return nil
}

// Resolve returns the loadable modules needed for want, dependencies first,
// each exactly once. Names that are built into the kernel are skipped; names
// that are neither loadable nor built in give ErrModuleNotFound.
func (db *ModuleDB) Resolve(want []string) ([]string, error) {
	var order []string
	state := map[string]int{} // 0 unseen, 1 visiting, 2 done
	var visit func(name string, chain []string) error
	visit = func(name string, chain []string) error {
		switch state[name] {
		case 2:
			return nil
		case 1:
			return fmt.Errorf("module dependency cycle: %s -> %s", strings.Join(chain, " -> "), name)
		}
		state[name] = 1
		deps := append([]string(nil), db.deps[name]...)
		sort.Strings(deps) // deterministic, and any order is valid for a DFS
		for _, d := range deps {
			if _, ok := db.files[d]; !ok {
				return fmt.Errorf("%s needs %s: %w", name, d, ErrModuleNotFound)
			}
			if err := visit(d, append(chain, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, name)
		return nil
	}
	for _, w := range want {
		name := ModuleName(w)
		if _, ok := db.files[name]; !ok {
			if db.builtin[name] {
				continue
			}
			return nil, fmt.Errorf("%s: %w", w, ErrModuleNotFound)
		}
		if err := visit(name, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// Builtin reports whether name is compiled into the kernel.
func (db *ModuleDB) Builtin(name string) bool { return db.builtin[ModuleName(name)] }

// File returns the path of a loadable module relative to Dir.
func (db *ModuleDB) File(name string) (string, bool) {
	f, ok := db.files[ModuleName(name)]
	return f, ok
}

// ReadModule returns the uncompressed ELF object of a loadable module. xz
// and zstd files are decompressed with the xz and zstd tools, gzip in Go;
// busybox insmod loads only plain objects.
func (db *ModuleDB) ReadModule(ctx context.Context, name string) ([]byte, error) {
	rel, ok := db.File(name)
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, ErrModuleNotFound)
	}
	p := filepath.Join(db.Dir, rel)
	switch {
	case strings.HasSuffix(rel, ".ko"):
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read module %s: %w", name, err)
		}
		return data, nil
	case strings.HasSuffix(rel, ".ko.gz"):
		f, err := os.Open(p)
		if err != nil {
			return nil, fmt.Errorf("open module %s: %w", name, err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("gunzip module %s: %w", name, err)
		}
		data, err := io.ReadAll(zr)
		if err != nil {
			return nil, fmt.Errorf("gunzip module %s: %w", name, err)
		}
		return data, nil
	case strings.HasSuffix(rel, ".ko.xz"):
		return decompressWith(ctx, "xz", p)
	case strings.HasSuffix(rel, ".ko.zst"):
		return decompressWith(ctx, "zstd", p)
	}
	return nil, fmt.Errorf("module %s: unknown file type %s", name, rel)
}

func decompressWith(ctx context.Context, tool, file string) ([]byte, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, tool, "-d", "-c", "-q", file)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s -d %s: %w: %s", tool, file, err, strings.TrimSpace(errb.String()))
	}
	return out.Bytes(), nil
}
