package imagebuild

import (
	"bytes"
	"compress/gzip"
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"strings"
)

//go:embed init.sh
var initScript []byte

// InitScript returns the /init the initramfs runs.
func InitScript() []byte { return bytes.Clone(initScript) }

// DefaultBusybox is where Debian's busybox-static installs its binary.
const DefaultBusybox = "/bin/busybox"

// InitramfsSpec describes an initramfs for one kernel.
type InitramfsSpec struct {
	Kernel  Kernel   // whose modules to pack
	Busybox string   // a statically linked busybox; default DefaultBusybox
	Modules []string // modules to load (with their dependencies); default DefaultModules
	Mtime   uint32   // the one mtime of every entry; 0 keeps builds reproducible
}

// InitramfsInfo says what went into an initramfs.
type InitramfsInfo struct {
	Modules []string // loaded by /init in this order
	Entries int
}

// BuildInitramfs writes a gzip-compressed newc initramfs to w: busybox with
// its applet links, the modules in dependency order with the list /init
// loads them from, /init itself and the device nodes the kernel needs before
// devtmpfs is mounted.
func BuildInitramfs(ctx context.Context, spec InitramfsSpec, w io.Writer) (InitramfsInfo, error) {
	if spec.Busybox == "" {
		spec.Busybox = DefaultBusybox
	}
	if spec.Modules == nil {
		spec.Modules = DefaultModules
	}
	a := NewArchive(spec.Mtime)
	if err := addBase(a); err != nil {
		return InitramfsInfo{}, err
	}
	if err := addBusybox(ctx, a, spec.Busybox, "/bin/busybox"); err != nil {
		return InitramfsInfo{}, err
	}
	if err := a.AddFile("init", 0o755, initScript); err != nil {
		return InitramfsInfo{}, err
	}
	db, err := LoadModuleDB(spec.Kernel.ModulesDir)
	if err != nil {
		return InitramfsInfo{}, fmt.Errorf("kernel %s: %w", spec.Kernel.Version, err)
	}
	order, err := db.Resolve(spec.Modules)
	if err != nil {
		return InitramfsInfo{}, fmt.Errorf("kernel %s: %w", spec.Kernel.Version, err)
	}
	var list strings.Builder
	for _, m := range order {
		data, err := db.ReadModule(ctx, m)
		if err != nil {
			return InitramfsInfo{}, err
		}
		if err := a.AddFile("lib/modules/"+m+".ko", 0o644, data); err != nil {
			return InitramfsInfo{}, err
		}
		list.WriteString(m + ".ko\n")
	}
	if err := a.AddFile("lib/modules/load.order", 0o644, []byte(list.String())); err != nil {
		return InitramfsInfo{}, err
	}

	zw, err := gzip.NewWriterLevel(w, gzip.BestCompression)
	if err != nil {
		return InitramfsInfo{}, fmt.Errorf("gzip: %w", err)
	}
	if _, err := a.WriteTo(zw); err != nil {
		return InitramfsInfo{}, fmt.Errorf("write initramfs: %w", err)
	}
	if err := zw.Close(); err != nil {
		return InitramfsInfo{}, fmt.Errorf("gzip: %w", err)
	}
	return InitramfsInfo{Modules: order, Entries: len(a.Names())}, nil
}

func addBase(a *Archive) error {
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "run", "newroot", "lib/modules"} {
		if err := a.AddDir(d, 0o755); err != nil {
			return err
		}
	}
	if err := a.AddDir("tmp", 0o1777); err != nil {
		return err
	}
	// The kernel opens /dev/console for init's stdio before /init can mount
	// devtmpfs, so the node must be in the archive.
	if err := a.AddCharDev("dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	return a.AddCharDev("dev/null", 0o666, 1, 3)
}

// addBusybox adds the busybox binary at dst and a symlink to it for every
// applet it lists (busybox --list-full), skipping links that would replace
// something already in the archive.
func addBusybox(ctx context.Context, a *Archive, src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("read busybox: %w", err)
	}
	if err := a.AddFile(dst, 0o755, data); err != nil {
		return err
	}
	applets, err := BusyboxApplets(ctx, src)
	if err != nil {
		return err
	}
	for _, p := range applets {
		if p == strings.TrimPrefix(dst, "/") {
			continue
		}
		if _, exists := a.entries[path.Clean(p)]; exists {
			continue
		}
		if err := a.AddSymlink(p, dst); err != nil {
			return err
		}
	}
	return nil
}

// BusyboxApplets returns the install paths of a busybox binary's applets
// ("bin/sh", "sbin/insmod", ...), as `busybox --list-full` prints them.
func BusyboxApplets(ctx context.Context, busybox string) ([]string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, busybox, "--list-full")
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("busybox --list-full: %w: %s", err, strings.TrimSpace(errb.String()))
	}
	var applets []string
	for _, l := range strings.Split(out.String(), "\n") {
		l = strings.Trim(strings.TrimSpace(l), "/")
		if l != "" && !strings.Contains(l, "..") {
			applets = append(applets, l)
		}
	}
	if len(applets) == 0 {
		return nil, fmt.Errorf("busybox --list-full: no applets listed")
	}
	return applets, nil
}
