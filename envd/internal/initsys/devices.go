package initsys

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// devLinks are the /dev symlinks that udev or systemd would make.
var devLinks = []struct{ name, target string }{
	{"fd", "/proc/self/fd"},
	{"stdin", "/proc/self/fd/0"},
	{"stdout", "/proc/self/fd/1"},
	{"stderr", "/proc/self/fd/2"},
	{"core", "/proc/kcore"},
}

// makeDevLinks creates the devLinks under dev and, when dev has no ptmx
// node (a tmpfs /dev), a ptmx -> pts/ptmx link. Existing entries are kept.
func makeDevLinks(dev string) error {
	var errs []error
	link := func(name, target string) {
		p := filepath.Join(dev, name)
		if _, err := os.Lstat(p); err == nil {
			return
		}
		if err := os.Symlink(target, p); err != nil && !errors.Is(err, os.ErrExist) {
			errs = append(errs, fmt.Errorf("symlink %s: %w", p, err))
		}
	}
	for _, l := range devLinks {
		link(l.name, l.target)
	}
	link("ptmx", "pts/ptmx")
	return errors.Join(errs...)
}

// ensureStdio points fds 0, 1 and 2 at the console when they are closed or
// are /dev/null. The kernel gives init /dev/console only if the root
// filesystem had that node when init started; otherwise the Go runtime
// opened /dev/null for them and every log line would be lost.
func ensureStdio(console string) error {
	var need []int
	for fd := 0; fd <= 2; fd++ {
		var st unix.Stat_t
		err := unix.Fstat(fd, &st)
		if err != nil || (st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == unix.Mkdev(1, 3)) {
			need = append(need, fd)
		}
	}
	if len(need) == 0 {
		return nil
	}
	cfd, err := unix.Open(console, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", console, err)
	}
	defer unix.Close(cfd)
	for _, fd := range need {
		if err := unix.Dup3(cfd, fd, 0); err != nil {
			return fmt.Errorf("dup console to fd %d: %w", fd, err)
		}
	}
	return nil
}
