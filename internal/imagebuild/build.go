package imagebuild

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// ErrMountsInWorkDir is returned instead of deleting a work directory that
// still has something mounted below it (a debootstrap that died with /proc
// mounted in its target).
var ErrMountsInWorkDir = errors.New("work directory still has mounts")

// BuildOptions configures Build.
type BuildOptions struct {
	OutDir        string   // artefacts go here
	ImagesDir     string   // the repository's images/ directory (templates/<name>/build.sh)
	Envd          string   // envd binary put into every template
	Templates     []string // template names; default just "minimal"
	KernelVersion string   // default: newest installed -cloud-amd64 kernel
	KernelPaths   KernelPaths
	Busybox       string // default DefaultBusybox
	StaticEnvd    bool   // refuse an envd that is not a static x86-64 ELF
	Force         bool   // rebuild even when the cache key matches
	Tool          string // this program, handed to template scripts; default os.Executable()
	Output        io.Writer
	Log           *slog.Logger
	Now           func() time.Time
}

// BuildReport lists what Build produced or found cached.
type BuildReport struct {
	Kernel    KernelManifest
	KernelHit bool
	Templates []TemplateReport
}

// TemplateReport is one template's outcome.
type TemplateReport struct {
	Manifest Manifest
	Hit      bool
	Took     time.Duration
}

// Build produces, under OutDir:
//
//	kernel/vmlinuz-<ver>, kernel/initramfs-<ver>.img, kernel/manifest.json
//	templates/<name>/rootfs.ext4, templates/<name>/manifest.json
//
// Each artefact is rebuilt only when its cache key (a hash of every input:
// kernel image, busybox, envd, template scripts, host tool versions and this
// program itself) differs from the one in its manifest; template base trees
// are cached separately in OutDir/.cache without envd in their key (see
// template.go). One Build at a time per OutDir (flock on OutDir/.lock).
func Build(ctx context.Context, o BuildOptions) (BuildReport, error) {
	var rep BuildReport
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Output == nil {
		o.Output = io.Discard
	}
	if o.Busybox == "" {
		o.Busybox = DefaultBusybox
	}
	if len(o.Templates) == 0 {
		o.Templates = []string{"minimal"}
	}
	if o.Tool == "" {
		exe, err := os.Executable()
		if err != nil {
			return rep, fmt.Errorf("find own executable: %w", err)
		}
		o.Tool = exe
	}
	if err := os.MkdirAll(o.OutDir, 0o755); err != nil {
		return rep, fmt.Errorf("create out dir: %w", err)
	}
	unlock, err := lockDir(o.OutDir)
	if err != nil {
		return rep, err
	}
	defer unlock()

	toolSum, err := FileSHA256(o.Tool)
	if err != nil {
		return rep, fmt.Errorf("hash tool: %w", err)
	}
	k, err := FindKernel(o.KernelPaths, o.KernelVersion)
	if err != nil {
		return rep, err
	}
	rep.Kernel, rep.KernelHit, err = buildKernel(ctx, o, k, toolSum)
	if err != nil {
		return rep, err
	}
	if o.StaticEnvd {
		if err := CheckStatic(o.Envd); err != nil {
			return rep, err
		}
	}
	envdSum, err := FileSHA256(o.Envd)
	if err != nil {
		return rep, fmt.Errorf("hash envd: %w", err)
	}
	for _, name := range o.Templates {
		start := time.Now()
		m, hit, err := buildTemplate(ctx, o, name, k.Version, envdSum, toolSum)
		if err != nil {
			return rep, fmt.Errorf("template %s: %w", name, err)
		}
		rep.Templates = append(rep.Templates, TemplateReport{Manifest: m, Hit: hit, Took: time.Since(start)})
	}
	return rep, nil
}

func buildKernel(ctx context.Context, o BuildOptions, k Kernel, toolSum string) (KernelManifest, bool, error) {
	dir := filepath.Join(o.OutDir, "kernel")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return KernelManifest{}, false, fmt.Errorf("kernel dir: %w", err)
	}
	var key cacheKey
	key.add("kind", "kernel")
	key.add("version", k.Version)
	key.add("tool", toolSum)
	key.add("modules", strings.Join(DefaultModules, ","))
	if err := key.addFile("vmlinuz", k.Image); err != nil {
		return KernelManifest{}, false, fmt.Errorf("hash kernel: %w", err)
	}
	if err := key.addFile("busybox", o.Busybox); err != nil {
		return KernelManifest{}, false, fmt.Errorf("hash busybox: %w", err)
	}
	sum := key.sum()
	manifestPath := filepath.Join(dir, "manifest.json")
	var old KernelManifest
	if !o.Force && readJSON(manifestPath, &old) == nil && old.CacheKey == sum &&
		fileExists(filepath.Join(dir, old.Kernel)) && fileExists(filepath.Join(dir, old.Initramfs)) {
		o.Log.Info("kernel cached", "kernel_version", k.Version)
		return old, true, nil
	}

	m := KernelManifest{
		KernelVersion: k.Version,
		Kernel:        "vmlinuz-" + k.Version,
		Initramfs:     "initramfs-" + k.Version + ".img",
		Append:        DefaultAppend + " quiet",
		CacheKey:      sum,
	}
	if err := copyFile(k.Image, filepath.Join(dir, m.Kernel), 0o644); err != nil {
		return m, false, fmt.Errorf("copy kernel: %w", err)
	}
	initrd := filepath.Join(dir, m.Initramfs)
	info, err := WriteInitramfs(ctx, InitramfsSpec{Kernel: k, Busybox: o.Busybox}, initrd)
	if err != nil {
		return m, false, err
	}
	m.Modules = info.Modules
	if m.KernelSHA256, err = FileSHA256(filepath.Join(dir, m.Kernel)); err != nil {
		return m, false, err
	}
	if m.InitramfsSHA256, err = FileSHA256(initrd); err != nil {
		return m, false, err
	}
	st, err := os.Stat(initrd)
	if err != nil {
		return m, false, fmt.Errorf("stat initramfs: %w", err)
	}
	m.InitramfsBytes = st.Size()
	m.BuiltAt = o.Now().UTC().Truncate(time.Second)
	if err := writeJSON(manifestPath, m); err != nil {
		return m, false, err
	}
	o.Log.Info("kernel built", "kernel_version", k.Version, "initramfs_bytes", m.InitramfsBytes, "modules", len(m.Modules))
	return m, false, nil
}

// WriteInitramfs builds an initramfs for spec into file atomically.
func WriteInitramfs(ctx context.Context, spec InitramfsSpec, file string) (InitramfsInfo, error) {
	tmp := file + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return InitramfsInfo{}, fmt.Errorf("create initramfs: %w", err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	info, err := BuildInitramfs(ctx, spec, bw)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, file)
	}
	if err != nil {
		os.Remove(tmp)
		return info, fmt.Errorf("write initramfs %s: %w", file, err)
	}
	return info, nil
}

// removeWorkDir deletes a scratch tree, refusing when anything is still
// mounted below it (deleting through a /proc or bind mount would reach the
// host).
func removeWorkDir(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if err := checkNoMounts(abs); err != nil {
		return err
	}
	if err := os.RemoveAll(abs); err != nil {
		return fmt.Errorf("remove work dir: %w", err)
	}
	return nil
}

// checkNoMounts returns ErrMountsInWorkDir when dir or anything below it is
// a mount point.
func checkNoMounts(abs string) error {
	mounts, err := mountsUnder(abs)
	if err != nil {
		return err
	}
	if len(mounts) > 0 {
		return fmt.Errorf("%s: %w: %s (umount them, then retry)", abs, ErrMountsInWorkDir, strings.Join(mounts, ", "))
	}
	return nil
}

// mountsUnder lists mount points at or below dir from /proc/self/mountinfo.
func mountsUnder(dir string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) in mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range []byte(s[i+1 : i+4]) {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + (c - '0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func lockDir(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
