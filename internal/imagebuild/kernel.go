package imagebuild

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ErrNoKernel is returned when no usable guest kernel is installed.
var ErrNoKernel = errors.New("no guest kernel installed (apt-get install linux-image-cloud-amd64)")

// Kernel is an installed Debian kernel: its bootable image and its modules.
type Kernel struct {
	Version    string // e.g. 6.1.0-57-cloud-amd64
	Image      string // /boot/vmlinuz-<version>
	ModulesDir string // /lib/modules/<version>
}

// KernelPaths says where to look for kernels; the zero value means the
// system locations.
type KernelPaths struct {
	BootDir    string // default /boot
	ModulesDir string // default /lib/modules
}

func (p KernelPaths) withDefaults() KernelPaths {
	if p.BootDir == "" {
		p.BootDir = "/boot"
	}
	if p.ModulesDir == "" {
		p.ModulesDir = "/lib/modules"
	}
	return p
}

// FindKernel returns the kernel with the given version, or, when version is
// empty, the newest "-cloud-amd64" kernel that has both an image and a
// modules directory with modules.dep.
func FindKernel(paths KernelPaths, version string) (Kernel, error) {
	paths = paths.withDefaults()
	candidates := []string{version}
	if version == "" {
		matches, err := filepath.Glob(filepath.Join(paths.BootDir, "vmlinuz-*-cloud-amd64"))
		if err != nil {
			return Kernel{}, fmt.Errorf("list kernels: %w", err)
		}
		candidates = candidates[:0]
		for _, m := range matches {
			candidates = append(candidates, strings.TrimPrefix(filepath.Base(m), "vmlinuz-"))
		}
		sort.Slice(candidates, func(i, j int) bool { return versionLess(candidates[j], candidates[i]) })
	}
	for _, v := range candidates {
		k := Kernel{
			Version:    v,
			Image:      filepath.Join(paths.BootDir, "vmlinuz-"+v),
			ModulesDir: filepath.Join(paths.ModulesDir, v),
		}
		if fileExists(k.Image) && fileExists(filepath.Join(k.ModulesDir, "modules.dep")) {
			return k, nil
		}
	}
	if version != "" {
		return Kernel{}, fmt.Errorf("kernel %s: %w", version, ErrNoKernel)
	}
	return Kernel{}, ErrNoKernel
}

// versionLess compares dotted/dashed version strings numerically where both
// parts are numbers ("6.1.0-57" < "6.1.0-123").
func versionLess(a, b string) bool {
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' })
	}
	pa, pb := split(a), split(b)
	for i := 0; i < len(pa) && i < len(pb); i++ {
		na, ea := strconv.Atoi(pa[i])
		nb, eb := strconv.Atoi(pb[i])
		switch {
		case ea == nil && eb == nil && na != nb:
			return na < nb
		case (ea != nil || eb != nil) && pa[i] != pb[i]:
			return pa[i] < pb[i]
		}
	}
	return len(pa) < len(pb)
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}
