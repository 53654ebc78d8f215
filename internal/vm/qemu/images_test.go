package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/imagebuild"
)

// testImages are the guest images the real-QEMU tests boot: Debian's cloud
// kernel, the initramfs and the minimal rootfs (busybox + envd), built with
// internal/imagebuild's API from the envd in this repository. Set
// WRENN_TEST_KERNEL, WRENN_TEST_INITRD and WRENN_TEST_ROOTFS to use
// prebuilt ones instead (for example `make images` output).
type testImages struct {
	Kernel, Initrd, Rootfs string
	// NoEnvdRootfs is a rootfs without envd: /init fails and the guest
	// powers off, for the never-healthy test.
	NoEnvdRootfs string
	Envd         string
}

var (
	imagesOnce sync.Once
	images     testImages
	imagesErr  error
	imagesSkip string
	imagesDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if imagesDir != "" {
		os.RemoveAll(imagesDir)
	}
	os.Exit(code)
}

// repoRoot finds the repository from this file's location.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// needImages returns the test images, building them once per test binary;
// it skips the test (with the reason) only when QEMU, the kernel or
// busybox are not installed.
func needImages(t testing.TB) testImages {
	t.Helper()
	imagesOnce.Do(func() { images, imagesSkip, imagesErr = buildImages() })
	if imagesSkip != "" {
		t.Skip(imagesSkip)
	}
	if imagesErr != nil {
		t.Fatalf("build test images: %v", imagesErr)
	}
	return images
}

func buildImages() (testImages, string, error) {
	if err := Available(""); err != nil {
		return testImages{}, "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)", nil
	}
	var im testImages
	im.Kernel, im.Initrd, im.Rootfs = os.Getenv("WRENN_TEST_KERNEL"), os.Getenv("WRENN_TEST_INITRD"), os.Getenv("WRENN_TEST_ROOTFS")
	k, err := imagebuild.FindKernel(imagebuild.KernelPaths{}, "")
	if errors.Is(err, imagebuild.ErrNoKernel) {
		return im, "no Debian cloud kernel installed (apt-get install linux-image-cloud-amd64)", nil
	}
	if err != nil {
		return im, "", err
	}
	if _, err := os.Stat(imagebuild.DefaultBusybox); err != nil {
		return im, "busybox-static is not installed (apt-get install busybox-static)", nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "wrenn-qemu-images-")
	if err != nil {
		return im, "", err
	}
	imagesDir = dir
	if im.Kernel == "" {
		im.Kernel = k.Image
	}
	if im.Initrd == "" {
		im.Initrd = filepath.Join(dir, "initramfs.img")
		if _, err := imagebuild.WriteInitramfs(ctx, imagebuild.InitramfsSpec{Kernel: k}, im.Initrd); err != nil {
			return im, "", err
		}
	}
	im.Envd = filepath.Join(dir, "envd")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", im.Envd, ".")
	build.Dir = filepath.Join(repoRoot(), "envd")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return im, "", fmt.Errorf("build envd: %w: %s", err, out)
	}
	if im.Rootfs == "" {
		im.Rootfs = filepath.Join(dir, "rootfs.ext4")
		if err := makeRootfs(ctx, filepath.Join(dir, "tree"), im.Rootfs, im.Envd); err != nil {
			return im, "", err
		}
	}
	// A rootfs whose init program is missing.
	im.NoEnvdRootfs = filepath.Join(dir, "noenvd.ext4")
	tree := filepath.Join(dir, "tree-noenvd")
	if err := imagebuild.StageMinimal(ctx, tree, ""); err != nil {
		return im, "", err
	}
	if err := imagebuild.MakeExt4(ctx, tree, im.NoEnvdRootfs, 64, "noenvd"); err != nil {
		return im, "", err
	}
	return im, "", nil
}

func makeRootfs(ctx context.Context, tree, out, envd string) error {
	if err := imagebuild.StageMinimal(ctx, tree, ""); err != nil {
		return err
	}
	if err := imagebuild.Finish(tree, imagebuild.FinishSpec{Envd: envd}); err != nil {
		return err
	}
	return imagebuild.MakeExt4(ctx, tree, out, 128, "rootfs")
}
