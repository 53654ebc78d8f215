package network

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

// runInNS runs fn on an OS thread switched into ns. The thread goes back to
// its own namespace before it is unlocked; if that fails the thread stays
// locked and dies with the goroutine, so no goroutine ever runs in a
// namespace it did not ask for.
func runInNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave netns (thread discarded): %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// currentNS opens the namespace the process started in. Threads of this
// process outside it are locked by runInNS, so any unlocked thread is in it.
func currentNS() (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return netns.Get()
}

// createNamedNS makes a new network namespace and bind-mounts it at path,
// which must not exist. It returns an open handle.
func createNamedNS(path string) (netns.NsHandle, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return netns.None(), fmt.Errorf("netns dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if errors.Is(err, fs.ErrExist) {
		return netns.None(), fmt.Errorf("%w: netns %s exists", errdefs.ErrAlreadyExists, path)
	}
	if err != nil {
		return netns.None(), fmt.Errorf("netns mount point: %w", err)
	}
	_ = f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		merr := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, "")
		if merr != nil {
			merr = fmt.Errorf("bind netns: %w", merr)
		}
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(merr, fmt.Errorf("leave netns (thread discarded): %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- merr
	}()
	if err := <-errc; err != nil {
		_ = deleteNamedNS(path)
		return netns.None(), err
	}
	h, err := netns.GetFromPath(path)
	if err != nil {
		_ = deleteNamedNS(path)
		return netns.None(), fmt.Errorf("open netns: %w", err)
	}
	return h, nil
}

// deleteNamedNS unmounts and removes a namespace made by createNamedNS;
// missing or half-made is fine. The kernel frees the namespace, and every
// interface and table in it, once nothing else holds it.
func deleteNamedNS(path string) error {
	err := unix.Unmount(path, unix.MNT_DETACH)
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount netns %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove netns %s: %w", path, err)
	}
	return nil
}

// netlinkIn opens a netlink handle whose sockets live in ns.
func netlinkIn(ns netns.NsHandle) (*netlink.Handle, error) {
	var h *netlink.Handle
	err := runInNS(ns, func() error {
		var err error
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE, unix.NETLINK_NETFILTER)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	return h, nil
}

// writeSysctl writes a /proc/sys value; the caller's thread decides the
// namespace. A missing key (IPv6 compiled out) is ignored when optional.
func writeSysctl(key, value string, optional bool) error {
	p := filepath.Join("/proc/sys", key)
	err := os.WriteFile(p, []byte(value), 0o644)
	if optional && errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

func readSysctl(key string) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc/sys", key))
	if err != nil {
		return "", fmt.Errorf("sysctl %s: %w", key, err)
	}
	return string(b), nil
}
