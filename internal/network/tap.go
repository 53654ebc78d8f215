package network

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ifreq is struct ifreq as TUNSETIFF reads it.
type ifreq struct {
	name  [unix.IFNAMSIZ]byte
	flags uint16
	_     [22]byte
}

// createTap makes a persistent TAP named name in the calling thread's
// namespace, with the flags Firecracker and QEMU attach with (no packet
// info, virtio-net header). The kernel lets a process without
// CAP_NET_ADMIN attach only if its euid is the owner and it is in the
// group; an unset owner would let anyone attach, so nil means root:root.
// The device stays after the descriptor closes; it goes away with its
// namespace.
func createTap(name string, owner *TapOwner) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/net/tun: %w", err)
	}
	defer unix.Close(fd)
	var req ifreq
	copy(req.name[:unix.IFNAMSIZ-1], name)
	req.flags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR
	if err := ioctl(fd, unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); err != nil {
		return fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	if owner == nil {
		owner = &TapOwner{}
	}
	if err := ioctl(fd, unix.TUNSETOWNER, uintptr(owner.UID)); err != nil {
		return fmt.Errorf("TUNSETOWNER %s: %w", name, err)
	}
	if err := ioctl(fd, unix.TUNSETGROUP, uintptr(owner.GID)); err != nil {
		return fmt.Errorf("TUNSETGROUP %s: %w", name, err)
	}
	if err := ioctl(fd, unix.TUNSETPERSIST, 1); err != nil {
		return fmt.Errorf("TUNSETPERSIST %s: %w", name, err)
	}
	return nil
}

func ioctl(fd int, req uint, arg uintptr) error {
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), arg); errno != 0 {
		return errno
	}
	return nil
}
