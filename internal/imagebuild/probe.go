package imagebuild

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
)

// Probe markers: the probe init prints ProbeMarker first thing (the boot-time
// measurement stops there), then what it sees, then ProbeDone, and powers off.
const (
	ProbeMarker = "WRENN-PROBE-USERSPACE"
	ProbeDone   = "WRENN-PROBE-DONE"
)

// probeScript stands in for envd in boot checks: it proves the initramfs
// handed over to the rootfs and reports the devices envd relies on.
const probeScript = `#!/bin/sh
echo ` + ProbeMarker + `
read -r up idle </proc/uptime
echo "WRENN-PROBE uptime=$up"
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
echo "WRENN-PROBE pid=$$ args=$*"
while read -r dev mnt fs opts rest; do
	[ "$mnt" = / ] && echo "WRENN-PROBE root=$dev fstype=$fs opts=$opts"
done </proc/mounts
for f in /sys/class/virtio-ports/*/name; do
	[ -f "$f" ] || continue
	d=${f%/name}
	echo "WRENN-PROBE vport ${d##*/}=$(cat "$f")"
done
[ -d /sys/class/net/eth0 ] && echo "WRENN-PROBE eth0 $(cat /sys/class/net/eth0/address)"
[ -e /dev/vsock ] && echo "WRENN-PROBE vsock"
echo "WRENN-PROBE account $(grep '^user:' /etc/passwd)"
echo "WRENN-PROBE home $(stat -c '%u:%g' /home/user)"
echo ` + ProbeDone + `
sync
poweroff -f
`

// ProbeScript returns the probe init script.
func ProbeScript() []byte { return []byte(probeScript) }

// BuildProbeRootfs builds a `minimal` rootfs whose "envd" is the probe
// script, in workDir, and returns the image path.
func BuildProbeRootfs(ctx context.Context, workDir, busybox string, sizeMiB int) (string, error) {
	stage := filepath.Join(workDir, "probe-root")
	if err := os.MkdirAll(stage, 0o755); err != nil {
		return "", fmt.Errorf("probe rootfs: %w", err)
	}
	if err := StageMinimal(ctx, stage, busybox); err != nil {
		return "", err
	}
	probe := filepath.Join(workDir, "probe.sh")
	if err := os.WriteFile(probe, ProbeScript(), 0o755); err != nil {
		return "", fmt.Errorf("probe rootfs: %w", err)
	}
	if err := Finish(stage, FinishSpec{Envd: probe}); err != nil {
		return "", err
	}
	img := filepath.Join(workDir, "probe.ext4")
	if err := MakeExt4(ctx, stage, img, sizeMiB, "rootfs"); err != nil {
		return "", err
	}
	return img, nil
}
