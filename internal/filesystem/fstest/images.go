package fstest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem"
	"github.com/wrenn-dev/wrenn-sandbox/internal/imagebuild"
)

// Templates in the registry MinimalRegistry builds.
const (
	// Minimal is busybox-static plus this repository's envd.
	Minimal = "minimal"
	// NoEnvd lacks envd: the initramfs cannot hand over, the kernel panics
	// and (with panic=1 and -no-reboot) QEMU exits. For never-healthy tests.
	NoEnvd = "noenvd"
)

// images is the per-test-binary registry (built once).
var images struct {
	once sync.Once
	dir  string
	skip string
	err  error
}

// RepoRoot is the repository root, from this file's location.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// MinimalRegistry returns an image registry directory (the images
// builder's layout) holding Debian's cloud kernel with a fresh initramfs
// and the templates Minimal and NoEnvd, built once per test binary with
// internal/imagebuild from the envd in this repository. It skips the test,
// saying what to install, when QEMU, the kernel or busybox-static are
// missing. Call CleanupImages from TestMain.
func MinimalRegistry(t testing.TB) string {
	t.Helper()
	images.once.Do(func() { images.dir, images.skip, images.err = buildMinimalRegistry() })
	if images.skip != "" {
		t.Skip(images.skip)
	}
	if images.err != nil {
		t.Fatalf("build test images: %v", images.err)
	}
	return images.dir
}

// CleanupImages removes what MinimalRegistry built.
func CleanupImages() {
	if images.dir != "" {
		os.RemoveAll(images.dir)
	}
}

func buildMinimalRegistry() (dir, skip string, err error) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return "", "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)", nil
	}
	k, err := imagebuild.FindKernel(imagebuild.KernelPaths{}, "")
	if errors.Is(err, imagebuild.ErrNoKernel) {
		return "", "no Debian cloud kernel installed (apt-get install linux-image-cloud-amd64)", nil
	}
	if err != nil {
		return "", "", err
	}
	if _, err := os.Stat(imagebuild.DefaultBusybox); err != nil {
		return "", "busybox-static is not installed (apt-get install busybox-static)", nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir, err = os.MkdirTemp("", "wrenn-images-")
	if err != nil {
		return "", "", err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
			dir = ""
		}
	}()
	kdir := filepath.Join(dir, "kernel")
	if err := os.Mkdir(kdir, 0o755); err != nil {
		return dir, "", err
	}
	kernel := filepath.Join(kdir, "vmlinuz-"+k.Version)
	if err := os.Symlink(k.Image, kernel); err != nil {
		return dir, "", err
	}
	initrd := filepath.Join(kdir, "initramfs-"+k.Version+".img")
	if _, err := imagebuild.WriteInitramfs(ctx, imagebuild.InitramfsSpec{Kernel: k}, initrd); err != nil {
		return dir, "", err
	}
	km := filesystem.KernelManifest{
		KernelVersion: k.Version, Kernel: filepath.Base(kernel), Initramfs: filepath.Base(initrd),
		Append: imagebuild.DefaultAppend,
	}
	if km.KernelSHA256, err = imagebuild.FileSHA256(kernel); err != nil {
		return dir, "", err
	}
	if km.InitramfsSHA256, err = imagebuild.FileSHA256(initrd); err != nil {
		return dir, "", err
	}
	if err := writeJSON(filepath.Join(kdir, "manifest.json"), km); err != nil {
		return dir, "", err
	}
	envd := filepath.Join(dir, "envd")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", envd, ".")
	build.Dir = filepath.Join(RepoRoot(), "envd")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return dir, "", fmt.Errorf("build envd: %w: %s", err, out)
	}
	for _, tc := range []struct{ name, envd string }{{Minimal, envd}, {NoEnvd, ""}} {
		if err := buildTemplate(ctx, dir, k.Version, tc.name, tc.envd); err != nil {
			return dir, "", err
		}
	}
	return dir, "", nil
}

// buildTemplate stages a minimal tree (with envd when given) and packs it
// into templates/<name>/rootfs.ext4 with its manifest.
func buildTemplate(ctx context.Context, root, kernelVersion, name, envd string) error {
	tdir := filepath.Join(root, "templates", name)
	tree := filepath.Join(root, ".tree-"+name)
	defer os.RemoveAll(tree)
	if err := os.MkdirAll(tdir, 0o755); err != nil {
		return err
	}
	if err := imagebuild.StageMinimal(ctx, tree, ""); err != nil {
		return err
	}
	if envd != "" {
		if err := imagebuild.Finish(tree, imagebuild.FinishSpec{Envd: envd}); err != nil {
			return err
		}
	}
	img := filepath.Join(tdir, "rootfs.ext4")
	if err := imagebuild.MakeExt4(ctx, tree, img, 128, "rootfs"); err != nil {
		return err
	}
	st, err := os.Stat(img)
	if err != nil {
		return err
	}
	sum, err := imagebuild.FileSHA256(img)
	if err != nil {
		return err
	}
	return writeJSON(filepath.Join(tdir, "manifest.json"), filesystem.TemplateManifest{
		Name: name, Version: "1", KernelVersion: kernelVersion, File: "rootfs.ext4",
		SizeBytes: st.Size(), SHA256: sum, BuiltAt: time.Now().UTC(),
	})
}

func writeJSON(file string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, data, 0o644)
}

// BuiltRegistry returns the images builder's output directory
// ($WRENN_IMAGES_DIR, else images/out) once it holds every template in
// names, running images/build.sh for the missing ones (a Debian-based
// template takes minutes the first time; the builder caches). It skips
// the test, saying why, when the templates are missing and cannot be
// built here (not root, or WRENN_BUILD_IMAGES=0).
func BuiltRegistry(t testing.TB, names ...string) string {
	t.Helper()
	out := os.Getenv("WRENN_IMAGES_DIR")
	if out == "" {
		out = filepath.Join(RepoRoot(), "images", "out")
	}
	missing := func() []string {
		var m []string
		r, err := filesystem.NewRegistry(out)
		for _, n := range names {
			if err != nil {
				m = append(m, n)
			} else if _, err := r.Resolve(n, ""); err != nil {
				m = append(m, n)
			}
		}
		return m
	}
	todo := missing()
	if len(todo) == 0 {
		return out
	}
	if os.Getenv("WRENN_BUILD_IMAGES") == "0" {
		t.Skipf("templates %v not built in %s and WRENN_BUILD_IMAGES=0 (run images/build.sh --templates %s)", todo, out, strings.Join(todo, ","))
	}
	if os.Geteuid() != 0 {
		t.Skipf("templates %v not built in %s; building them needs root (sudo images/build.sh --templates %s)", todo, out, strings.Join(todo, ","))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	t.Logf("building templates %v with images/build.sh into %s (minutes the first time)", todo, out)
	cmd := exec.CommandContext(ctx, filepath.Join(RepoRoot(), "images", "build.sh"), "--templates", strings.Join(append([]string{Minimal}, todo...), ","), "--out", out)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		t.Fatalf("images/build.sh: %v\n%s", err, log.String())
	}
	if todo := missing(); len(todo) > 0 {
		t.Fatalf("images/build.sh ran but templates %v are still missing:\n%s", todo, log.String())
	}
	return out
}
