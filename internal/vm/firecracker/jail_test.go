package firecracker

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/jailer"
)

// fakeJailer does the part of the jailer the driver depends on: the chroot
// at <base>/<exec name>/<id>/root, the binary copied in, the pid file, and
// firecracker exec'd inside the chroot with --id and the arguments after
// `--`. No cgroups, no privilege drop, no /dev nodes: the real jailer has
// not been run here.
const fakeJailer = `#!/bin/sh
set -e
while [ $# -gt 0 ]; do
	case "$1" in
	--id) id=$2; shift 2 ;;
	--exec-file) exe=$2; shift 2 ;;
	--uid) uid=$2; shift 2 ;;
	--gid) gid=$2; shift 2 ;;
	--chroot-base-dir) base=$2; shift 2 ;;
	--) shift; break ;;
	*) shift ;;
	esac
done
name=$(basename "$exe")
root="$base/$name/$id/root"
mkdir -p "$root/run"
cp "$exe" "$root/$name"
echo $$ > "$root/$name.pid"
exec chroot --userspec="$uid:$gid" "$root" "/$name" --id="$id" "$@"
`

// TestJailedLifecycle runs the driver's jailer path against the fake
// jailer: files placed in the jail, paths as seen inside it, snapshot files
// moved out of it, restore into a second jail, everything removed after.
func TestJailedLifecycle(t *testing.T) {
	requireRoot(t)
	bin := shortDir(t, "fcj")
	jailerBin := filepath.Join(bin, "jailer")
	if err := os.WriteFile(jailerBin, []byte(fakeJailer), 0o755); err != nil {
		t.Fatal(err)
	}
	base := shortDir(t, "fcjb")
	cfg := testConfig(t, "", "")
	cfg.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"} // no envd in the chroot: the guest stays silent
	cfg.Jailer = &JailerConfig{Binary: jailerBin, UID: 0, GID: 0, ChrootBaseDir: base}
	d := newTestDriver(t, cfg)
	spec := testSpec(t)
	in := create(t, d, spec)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	l, _ := jailer.Config{ID: spec.ID, ExecFile: fakeBin, ChrootBaseDir: base}.Layout()
	if in.paths.apiSock != l.APISocket() || in.Handle().Sockets["vsock"] != l.HostPath("/run/v.sock") {
		t.Fatalf("sockets %v", in.Handle().Sockets)
	}
	fc, err := in.api.GetVMConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fc.BootSource.KernelImagePath != "/vmlinux" || fc.Drives[0].PathOnHost != "/rootfs.ext4" || fc.Vsock.UDSPath != "/run/v.sock" || fc.Logger.LogPath != "/firecracker.log" {
		t.Fatalf("paths inside the jail: %+v %+v %+v %+v", fc.BootSource, fc.Drives, fc.Vsock, fc.Logger)
	}
	snap := shortDir(t, "fcsnap")
	if _, err := in.Snapshot(ctx, snap); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{snapStateName, snapMemName, snapRootfsName, snapMetaName} {
		if _, err := os.Stat(filepath.Join(snap, f)); err != nil {
			t.Fatalf("snapshot file: %v", err)
		}
	}
	if err := in.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l.InstanceDir); !os.IsNotExist(err) {
		t.Fatalf("jail left behind: %v", err)
	}
	if _, err := os.Stat(spec.Rootfs); err != nil {
		t.Fatalf("the caller's rootfs went with the jail: %v", err)
	}

	spec2 := testSpec(t)
	r, err := d.Restore(ctx, spec2, snap)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := r.State(ctx); err != nil || st != vm.StateRunning {
		t.Fatalf("restored state %q %v", st, err)
	}
	l2, _ := jailer.Config{ID: spec2.ID, ExecFile: fakeBin, ChrootBaseDir: base}.Layout()
	if err := r.Destroy(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l2.InstanceDir); !os.IsNotExist(err) {
		t.Fatalf("second jail left behind: %v", err)
	}
}
