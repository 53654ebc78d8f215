package imagebuild

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Template scripts (images/templates/<name>/build.sh) populate a base tree;
// Build then adds envd and the accounts (Finish) and packs the tree
// (MakeExt4). The tree is kept under OutDir/.cache/<name>/root with its own
// key, which leaves envd out, so a new envd costs a Finish and an mkfs
// (seconds), not a new debootstrap.
//
// The script's environment:
//
//	WRENN_ROOT          the empty directory to populate
//	WRENN_WORK          scratch directory, deleted afterwards
//	WRENN_FINISH_OUT    file for "key=value" finish options: size_mib, shell, user_groups
//	WRENN_PACKAGES_OUT  file for "name version" lines recorded in the manifest
//	WRENN_IMAGE_TOOL    this program
//	WRENN_BUSYBOX       busybox-static binary

// templateBaseFormat names the script contract above; change it when the
// contract changes so that every cached base tree is rebuilt.
const templateBaseFormat = "1"

// finishOptions are what a template asks of Finish and MakeExt4.
type finishOptions struct {
	SizeMiB    int
	Shell      string
	UserGroups []string
}

func parseFinishOptions(data string) (finishOptions, error) {
	o := finishOptions{SizeMiB: 256, Shell: "/bin/sh"}
	for _, line := range strings.Split(data, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return o, fmt.Errorf("finish options: %q is not key=value", line)
		}
		switch k {
		case "size_mib":
			n, err := strconv.Atoi(v)
			if err != nil || n < 16 {
				return o, fmt.Errorf("finish options: size_mib %q: want an integer >= 16", v)
			}
			o.SizeMiB = n
		case "shell":
			if !strings.HasPrefix(v, "/") {
				return o, fmt.Errorf("finish options: shell %q is not absolute", v)
			}
			o.Shell = v
		case "user_groups":
			o.UserGroups = splitComma(v)
		default:
			return o, fmt.Errorf("finish options: unknown key %q", k)
		}
	}
	return o, nil
}

func splitComma(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func buildTemplate(ctx context.Context, o BuildOptions, name, kernelVersion, envdSum, toolSum string) (Manifest, bool, error) {
	if name == "" || strings.ContainsAny(name, "/.") {
		return Manifest{}, false, fmt.Errorf("bad template name %q", name)
	}
	srcDir := filepath.Join(o.ImagesDir, "templates", name)
	script := filepath.Join(srcDir, "build.sh")
	if !fileExists(script) {
		return Manifest{}, false, fmt.Errorf("no %s", script)
	}
	version := "0"
	if v, err := os.ReadFile(filepath.Join(srcDir, "VERSION")); err == nil {
		version = strings.TrimSpace(string(v))
	}
	hostPkgs := HostPackageVersions(ctx, "busybox-static", "e2fsprogs", "debootstrap")

	scriptText, err := os.ReadFile(script)
	if err != nil {
		return Manifest{}, false, fmt.Errorf("read %s: %w", script, err)
	}
	var base cacheKey
	base.add("kind", "template-base")
	base.add("format", templateBaseFormat)
	base.add("name", name)
	base.add("version", version)
	// A base tree depends on this program only if its script calls it (the
	// Debian templates do not, so editing the Go side costs them no
	// debootstrap). The finished image always depends on it (full key).
	if strings.Contains(string(scriptText), "WRENN_IMAGE_TOOL") {
		base.add("tool", toolSum)
	}
	for _, p := range sortedKeys(hostPkgs) {
		base.add("host-package:"+p, hostPkgs[p])
	}
	if err := base.addTree("template", srcDir); err != nil {
		return Manifest{}, false, err
	}
	if err := base.addFile("lib.sh", filepath.Join(o.ImagesDir, "templates", "lib.sh")); err != nil {
		return Manifest{}, false, err
	}
	if err := base.addFile("busybox", o.Busybox); err != nil {
		return Manifest{}, false, err
	}
	baseSum := base.sum()
	full := cacheKey{lines: append([]string(nil), base.lines...)}
	full.add("tool", toolSum)
	full.add("envd", envdSum)
	sum := full.sum()

	outDir := filepath.Join(o.OutDir, "templates", name)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return Manifest{}, false, fmt.Errorf("template dir: %w", err)
	}
	manifestPath := filepath.Join(outDir, "manifest.json")
	var old Manifest
	if !o.Force && readJSON(manifestPath, &old) == nil && old.CacheKey == sum {
		if st, err := os.Stat(filepath.Join(outDir, old.File)); err == nil && st.Size() == old.SizeBytes {
			if old.KernelVersion != kernelVersion {
				old.KernelVersion = kernelVersion
				if err := writeJSON(manifestPath, old); err != nil {
					return old, true, err
				}
			}
			o.Log.Info("template cached", "template", name)
			return old, true, nil
		}
	}

	cacheDir := filepath.Join(o.OutDir, ".cache", name)
	root := filepath.Join(cacheDir, "root")
	keyFile := filepath.Join(cacheDir, "base.key")
	if key, err := os.ReadFile(keyFile); o.Force || err != nil || strings.TrimSpace(string(key)) != baseSum || !dirExists(root) {
		if err := runTemplateScript(ctx, o, name, script, cacheDir); err != nil {
			return Manifest{}, false, err
		}
		if err := os.WriteFile(keyFile, []byte(baseSum+"\n"), 0o644); err != nil {
			return Manifest{}, false, fmt.Errorf("write base key: %w", err)
		}
	} else {
		o.Log.Info("template base tree cached", "template", name)
	}

	finishData, err := os.ReadFile(filepath.Join(cacheDir, "finish.conf"))
	if err != nil && !os.IsNotExist(err) {
		return Manifest{}, false, fmt.Errorf("read finish options: %w", err)
	}
	fo, err := parseFinishOptions(string(finishData))
	if err != nil {
		return Manifest{}, false, err
	}
	if err := Finish(root, FinishSpec{Envd: o.Envd, Shell: fo.Shell, UserGroups: fo.UserGroups}); err != nil {
		return Manifest{}, false, err
	}
	rootfs := filepath.Join(outDir, "rootfs.ext4")
	tmpRootfs := rootfs + ".building"
	if err := MakeExt4(ctx, root, tmpRootfs, fo.SizeMiB, "rootfs"); err != nil {
		return Manifest{}, false, err
	}
	pkgs, err := readPackages(filepath.Join(cacheDir, "packages.txt"))
	if err != nil {
		return Manifest{}, false, fmt.Errorf("read package list: %w", err)
	}
	if pkgs == nil {
		pkgs = map[string]string{}
	}
	for p, v := range hostPkgs {
		if _, ok := pkgs[p]; !ok && v != "" && p != "debootstrap" {
			pkgs["host:"+p] = v
		}
	}
	m := Manifest{
		Name: name, Version: version, KernelVersion: kernelVersion, File: "rootfs.ext4",
		CacheKey: sum, EnvdSHA256: envdSum, Packages: pkgs,
	}
	st, err := os.Stat(tmpRootfs)
	if err != nil {
		return m, false, fmt.Errorf("stat rootfs: %w", err)
	}
	m.SizeBytes = st.Size()
	if m.SHA256, err = FileSHA256(tmpRootfs); err != nil {
		os.Remove(tmpRootfs)
		return m, false, err
	}
	if err := os.Rename(tmpRootfs, rootfs); err != nil {
		return m, false, fmt.Errorf("install rootfs: %w", err)
	}
	m.BuiltAt = o.Now().UTC().Truncate(time.Second)
	if err := writeJSON(manifestPath, m); err != nil {
		return m, false, err
	}
	return m, false, nil
}

// runTemplateScript runs a template's build.sh into a fresh tree and, on
// success, replaces cacheDir's root, finish.conf and packages.txt with its
// results. A failed run leaves the previous cache as it was.
func runTemplateScript(ctx context.Context, o BuildOptions, name, script, cacheDir string) error {
	work := filepath.Join(o.OutDir, ".work", name)
	if err := removeWorkDir(work); err != nil {
		return err
	}
	newRoot := filepath.Join(work, "root")
	if err := os.MkdirAll(newRoot, 0o755); err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	finishFile := filepath.Join(work, "finish.conf")
	pkgFile := filepath.Join(work, "packages.txt")
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Dir = filepath.Dir(script)
	cmd.Env = append(os.Environ(),
		"WRENN_ROOT="+newRoot,
		"WRENN_WORK="+filepath.Join(work, "scratch"),
		"WRENN_FINISH_OUT="+finishFile,
		"WRENN_PACKAGES_OUT="+pkgFile,
		"WRENN_IMAGE_TOOL="+o.Tool,
		"WRENN_BUSYBOX="+o.Busybox,
	)
	if err := os.MkdirAll(filepath.Join(work, "scratch"), 0o755); err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	cmd.Stdout, cmd.Stderr = o.Output, o.Output
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	o.Log.Info("building template base tree", "template", name, "script", script)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("run %s: %w", script, err)
	}
	if err := checkNoMounts(work); err != nil {
		return err
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return fmt.Errorf("cache dir: %w", err)
	}
	// Drop the old key first: a crash between here and the new key must
	// not leave an old key next to a new tree.
	if err := os.Remove(filepath.Join(cacheDir, "base.key")); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("drop base key: %w", err)
	}
	if err := removeWorkDir(filepath.Join(cacheDir, "root")); err != nil {
		return err
	}
	for _, f := range []string{"finish.conf", "packages.txt"} {
		if err := os.Remove(filepath.Join(cacheDir, f)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("drop %s: %w", f, err)
		}
		if err := os.Rename(filepath.Join(work, f), filepath.Join(cacheDir, f)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("keep %s: %w", f, err)
		}
	}
	if err := os.Rename(newRoot, filepath.Join(cacheDir, "root")); err != nil {
		return fmt.Errorf("keep base tree: %w", err)
	}
	return removeWorkDir(work)
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
