package process

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Terminal size used when a PTY request gives none (or a zero dimension).
const (
	defaultCols = 80
	defaultRows = 24
)

// openPTY allocates a pseudo-terminal pair. The master comes back as a
// non-blocking *os.File, so reads and writes go through the runtime poller
// and honour deadlines and Close; the slave is a plain descriptor meant to be
// handed to a child and then closed. Both are close-on-exec.
func openPTY() (master *os.File, slave int, err error) {
	m, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, -1, fmt.Errorf("open /dev/ptmx: %w", err)
	}
	if err := unix.IoctlSetPointerInt(m, unix.TIOCSPTLCK, 0); err != nil {
		unix.Close(m)
		return nil, -1, fmt.Errorf("unlock pty: %w", err)
	}
	s, err := openPeer(m)
	if err != nil {
		unix.Close(m)
		return nil, -1, err
	}
	if err := unix.SetNonblock(m, true); err != nil {
		unix.Close(m)
		unix.Close(s)
		return nil, -1, fmt.Errorf("pty master nonblock: %w", err)
	}
	return os.NewFile(uintptr(m), "/dev/ptmx"), s, nil
}

// openPeer opens the slave side of master m: TIOCGPTPEER where the kernel
// has it (no path lookup, immune to a foreign devpts mount), else by name.
func openPeer(m int) (int, error) {
	const flags = unix.O_RDWR | unix.O_NOCTTY | unix.O_CLOEXEC
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(m), uintptr(unix.TIOCGPTPEER), uintptr(flags))
	if errno == 0 {
		return int(r), nil
	}
	n, err := unix.IoctlGetUint32(m, unix.TIOCGPTN)
	if err != nil {
		return -1, fmt.Errorf("pty number: %w", err)
	}
	name := "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
	s, err := unix.Open(name, flags, 0)
	if err != nil {
		return -1, fmt.Errorf("open %s: %w", name, err)
	}
	return s, nil
}

// setWinsize sets the terminal window size on a PTY master; the kernel
// sends SIGWINCH to the terminal's foreground process group.
func setWinsize(master *os.File, cols, rows uint32) error {
	if cols == 0 {
		cols = defaultCols
	}
	if rows == 0 {
		rows = defaultRows
	}
	ws := unix.Winsize{Col: clampU16(cols), Row: clampU16(rows)}
	rc, err := master.SyscallConn()
	if err != nil {
		return fmt.Errorf("pty resize: %w", err)
	}
	var ioctlErr error
	if err := rc.Control(func(fd uintptr) {
		ioctlErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &ws)
	}); err != nil {
		return fmt.Errorf("pty resize: %w", err)
	}
	if ioctlErr != nil {
		return fmt.Errorf("pty resize: %w", ioctlErr)
	}
	return nil
}

func clampU16(v uint32) uint16 {
	if v > 0xffff {
		return 0xffff
	}
	return uint16(v)
}
