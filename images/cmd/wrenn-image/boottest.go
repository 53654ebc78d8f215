package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/imagebuild"
)

// cmdBoottest boots a probe rootfs (minimal + a script standing in for
// envd) under QEMU microvm several times and prints the time from QEMU start
// to the marker (by default the probe's first userspace line), with the
// median. -rootfs boots another image, e.g. a template with -marker 'envd serving'.
func cmdBoottest(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("boottest", flag.ContinueOnError)
	kernel := fs.String("kernel", "", "kernel image (default: the installed cloud kernel)")
	initrd := fs.String("initrd", "", "initramfs (default: built now for that kernel)")
	rootfs := fs.String("rootfs", "", "rootfs to boot (default: a probe rootfs built now; its init must print the marker)")
	marker := fs.String("marker", imagebuild.ProbeMarker, "serial text that ends the measurement")
	appendArgs := fs.String("append", imagebuild.DefaultAppend+" quiet", "kernel command line")
	runs := fs.Int("runs", 5, "number of boots")
	timeout := fs.Duration("timeout", 60*time.Second, "per-boot limit")
	accel := fs.String("accel", "tcg", "tcg or kvm")
	tscKHz := fs.Int("tsc-khz", 0, "tsc_early_khz= under TCG (0: the host's rate, -1: leave the command line alone)")
	keep := fs.Bool("keep", false, "keep the work directory")
	verbose := fs.Bool("v", false, "print the serial log of every boot")
	if err := fs.Parse(args); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "wib")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Println("work dir:", work)
	} else {
		defer os.RemoveAll(work)
	}
	if *kernel == "" || *initrd == "" {
		k, err := imagebuild.FindKernel(imagebuild.KernelPaths{}, "")
		if err != nil {
			return err
		}
		if *kernel == "" {
			*kernel = k.Image
		}
		if *initrd == "" {
			*initrd = filepath.Join(work, "initramfs.img")
			if _, err := imagebuild.WriteInitramfs(ctx, imagebuild.InitramfsSpec{Kernel: k}, *initrd); err != nil {
				return err
			}
		}
	}
	if *rootfs == "" {
		*rootfs, err = imagebuild.BuildProbeRootfs(ctx, work, imagebuild.DefaultBusybox, 64)
		if err != nil {
			return err
		}
	}
	log := newLogger(false)
	var times []time.Duration
	failures := 0
	for i := 0; i < *runs; i++ {
		spec := imagebuild.BootSpec{
			Kernel: *kernel, Initrd: *initrd, Rootfs: *rootfs, Append: *appendArgs, Accel: *accel,
			WorkDir: filepath.Join(work, fmt.Sprintf("run%d", i)), Marker: *marker,
			SerialPort: "org.wrenn.envd", UserNet: true, TSCKHz: *tscKHz,
		}
		if i == 0 {
			fmt.Println("qemu-system-x86_64", shellJoin(spec.Args()))
		}
		bctx, cancel := context.WithTimeout(ctx, *timeout)
		res, err := imagebuild.Boot(bctx, spec, log)
		cancel()
		if *verbose || err != nil {
			fmt.Printf("--- run %d serial ---\n%s\n", i, res.Serial)
		}
		if err != nil {
			if errors.Is(err, context.Canceled) || ctx.Err() != nil {
				return err
			}
			failures++
			fmt.Printf("run %d: FAILED: %v\n", i, err)
			continue
		}
		times = append(times, res.ToMarker)
		fmt.Printf("run %d: marker after %v (qemu exited by itself: %v)\n", i, res.ToMarker.Round(time.Millisecond), res.Exited)
	}
	if len(times) == 0 {
		return fmt.Errorf("no successful boot in %d runs", *runs)
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	fmt.Printf("boots: %d ok, %d failed; min %v  p50 %v  max %v\n", len(times), failures,
		times[0].Round(time.Millisecond), times[len(times)/2].Round(time.Millisecond), times[len(times)-1].Round(time.Millisecond))
	return nil
}

func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \"'$") {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			q[i] = a
		}
	}
	return strings.Join(q, " ")
}
