package initsys

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// SetClock sets CLOCK_REALTIME. After a snapshot restore the guest's clock
// is wherever it was when the snapshot was taken; the host sends the real
// time through /init and envd calls this. It needs CAP_SYS_TIME and must
// only be called inside a VM.
func SetClock(t time.Time) error {
	ts := unix.NsecToTimespec(t.UnixNano())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("set clock: %w", err)
	}
	return nil
}

// Reseed mixes seed into the kernel's random pool (without crediting
// entropy) and asks the kernel to reseed its CRNG from it, so clones
// restored from one snapshot stop sharing a random stream. The ioctl needs
// CAP_SYS_ADMIN; kernels without it (before 4.17) only get the mix-in.
func Reseed(seed []byte) error {
	return reseed("/dev/urandom", seed)
}

func reseed(path string, seed []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("reseed: %w", err)
	}
	defer f.Close()
	if _, err := f.Write(seed); err != nil {
		return fmt.Errorf("reseed: write: %w", err)
	}
	// RNDRESEEDCRNG is _IO('R', 0x07).
	const rndReseedCRNG = 0x5207
	if err := unix.IoctlSetInt(int(f.Fd()), rndReseedCRNG, 0); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOTTY) {
		return fmt.Errorf("reseed: ioctl: %w", err)
	}
	return nil
}
