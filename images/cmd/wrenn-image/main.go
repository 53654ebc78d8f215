// Command wrenn-image builds Wrenn's guest images: the initramfs for Debian's
// cloud kernel, root filesystems (ext4 via mkfs.ext4 -d) and the cached,
// manifest-described artefact tree the host agent boots from. It also boots
// a probe image under QEMU to check and time the result.
//
//	wrenn-image build     [-out DIR] [-envd FILE] [-templates minimal,python311] [-force]
//	wrenn-image initramfs -out FILE [-kernel-version V] [-modules a,b]
//	wrenn-image rootfs    -dir DIR -envd FILE -out FILE [-minimal] [-size-mib N]
//	wrenn-image stage-minimal -dir DIR [-busybox FILE]
//	wrenn-image boottest  [-runs N] [-kernel F -initrd F] [-timeout D]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/wrenn-dev/wrenn-sandbox/internal/imagebuild"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "wrenn-image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("usage: wrenn-image build|initramfs|rootfs|stage-minimal|boottest [flags]")
	}
	cmds := map[string]func(context.Context, []string) error{
		"build":         cmdBuild,
		"initramfs":     cmdInitramfs,
		"rootfs":        cmdRootfs,
		"stage-minimal": cmdStageMinimal,
		"boottest":      cmdBoottest,
	}
	f, ok := cmds[args[0]]
	if !ok {
		return fmt.Errorf("unknown command %q (want build, initramfs, rootfs, stage-minimal or boottest)", args[0])
	}
	return f(ctx, args[1:])
}

func newLogger(verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// defaultImagesDir finds the repository's images/ directory from the
// working directory (the repo root or images/ itself).
func defaultImagesDir() string {
	for _, d := range []string{"images", "."} {
		if st, err := os.Stat(filepath.Join(d, "templates")); err == nil && st.IsDir() {
			abs, _ := filepath.Abs(d)
			return abs
		}
	}
	return "images"
}

func cmdBuild(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("build", flag.ContinueOnError)
	imagesDir := fs.String("images-dir", defaultImagesDir(), "the repository's images/ directory")
	out := fs.String("out", os.Getenv("WRENN_IMAGES_DIR"), "output directory (default $WRENN_IMAGES_DIR or <images-dir>/out)")
	envd := fs.String("envd", os.Getenv("WRENN_ENVD"), "envd binary to put into every template")
	templates := fs.String("templates", "minimal", "comma-separated template names")
	kver := fs.String("kernel-version", "", "kernel version (default: newest installed -cloud-amd64)")
	busybox := fs.String("busybox", imagebuild.DefaultBusybox, "statically linked busybox")
	force := fs.Bool("force", false, "rebuild even when cached")
	anyEnvd := fs.Bool("allow-dynamic-envd", false, "accept an envd that is not statically linked (tests with stand-ins)")
	verbose := fs.Bool("v", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *envd == "" {
		return errors.New("build: -envd (or WRENN_ENVD) is required")
	}
	if *out == "" {
		*out = filepath.Join(*imagesDir, "out")
	}
	envdAbs, err := filepath.Abs(*envd)
	if err != nil {
		return err
	}
	outAbs, err := filepath.Abs(*out)
	if err != nil {
		return err
	}
	log := newLogger(*verbose)
	rep, err := imagebuild.Build(ctx, imagebuild.BuildOptions{
		OutDir:        outAbs,
		ImagesDir:     *imagesDir,
		Envd:          envdAbs,
		Templates:     splitList(*templates),
		KernelVersion: *kver,
		Busybox:       *busybox,
		Force:         *force,
		StaticEnvd:    !*anyEnvd,
		Output:        os.Stderr,
		Log:           log,
	})
	if err != nil {
		return err
	}
	k := rep.Kernel
	fmt.Printf("kernel    %s  %s  initramfs %s (%d bytes, cached=%v)\n", k.KernelVersion,
		filepath.Join(outAbs, "kernel", k.Kernel), filepath.Join(outAbs, "kernel", k.Initramfs), k.InitramfsBytes, rep.KernelHit)
	for _, t := range rep.Templates {
		m := t.Manifest
		fmt.Printf("template  %-10s %s  sha256 %s  (%d bytes, cached=%v, %s)\n", m.Name,
			filepath.Join(outAbs, "templates", m.Name, m.File), m.SHA256[:16], m.SizeBytes, t.Hit, t.Took.Round(1e6))
	}
	return nil
}

func cmdInitramfs(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("initramfs", flag.ContinueOnError)
	out := fs.String("out", "", "output file (gzip newc cpio)")
	kver := fs.String("kernel-version", "", "kernel version (default: newest installed -cloud-amd64)")
	modulesDir := fs.String("modules-root", "/lib/modules", "directory holding <version>/modules.dep")
	busybox := fs.String("busybox", imagebuild.DefaultBusybox, "statically linked busybox")
	modules := fs.String("modules", strings.Join(imagebuild.DefaultModules, ","), "modules to load (dependencies are added)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("initramfs: -out is required")
	}
	k, err := imagebuild.FindKernel(imagebuild.KernelPaths{ModulesDir: *modulesDir}, *kver)
	if err != nil {
		return err
	}
	info, err := imagebuild.WriteInitramfs(ctx, imagebuild.InitramfsSpec{Kernel: k, Busybox: *busybox, Modules: splitList(*modules)}, *out)
	if err != nil {
		return err
	}
	fmt.Printf("%s: kernel %s, %d entries, modules: %s\n", *out, k.Version, info.Entries, strings.Join(info.Modules, " "))
	return nil
}

func cmdRootfs(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("rootfs", flag.ContinueOnError)
	dir := fs.String("dir", "", "staging directory (a debootstrap tree, or empty with -minimal)")
	minimal := fs.Bool("minimal", false, "stage the busybox-only base into -dir first")
	busybox := fs.String("busybox", imagebuild.DefaultBusybox, "statically linked busybox (for -minimal)")
	envd := fs.String("envd", "", "envd binary")
	out := fs.String("out", "", "ext4 image to write")
	size := fs.Int("size-mib", 256, "image size in MiB (sparse)")
	label := fs.String("label", "rootfs", "filesystem label")
	hostname := fs.String("hostname", "wrenn", "guest hostname")
	shell := fs.String("shell", "/bin/sh", "login shell of the sandbox user")
	groups := fs.String("user-groups", "", "extra groups for the sandbox user, comma-separated")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *envd == "" || *out == "" {
		return errors.New("rootfs: -dir, -envd and -out are required")
	}
	if *minimal {
		if err := imagebuild.StageMinimal(ctx, *dir, *busybox); err != nil {
			return err
		}
	}
	if err := imagebuild.Finish(*dir, imagebuild.FinishSpec{
		Envd: *envd, Hostname: *hostname, Shell: *shell, UserGroups: splitList(*groups),
	}); err != nil {
		return err
	}
	return imagebuild.MakeExt4(ctx, *dir, *out, *size, *label)
}

func cmdStageMinimal(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("stage-minimal", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory to lay the busybox base tree out in")
	busybox := fs.String("busybox", imagebuild.DefaultBusybox, "statically linked busybox")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("stage-minimal: -dir is required")
	}
	return imagebuild.StageMinimal(ctx, *dir, *busybox)
}
