package transport

import (
	"context"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fileConn makes a pty master usable as the host's net.Conn.
type fileConn struct{ *os.File }

func (fileConn) LocalAddr() net.Addr  { return SerialAddr{Name: "pty-master"} }
func (fileConn) RemoteAddr() net.Addr { return SerialAddr{Name: "pty-slave"} }

// openRawPty returns a pty master and the path of its slave, in raw mode
// so the line discipline passes bytes through untouched, as a virtio port
// does.
func openRawPty(t *testing.T) (*os.File, string) {
	t.Helper()
	// Raw fd work first, then os.NewFile: (*os.File).Fd would switch the
	// master to blocking mode and defeat deadlines.
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Skipf("no pty support: %v", err)
	}
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(mfd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	m := os.NewFile(uintptr(mfd), "ptmx")
	t.Cleanup(func() { m.Close() })
	slave := fmt.Sprintf("/dev/pts/%d", n)
	fd, err := unix.Open(slave, unix.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	tio.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Cflag &^= unix.CSIZE | unix.PARENB
	tio.Cflag |= unix.CS8
	tio.Cc[unix.VMIN], tio.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	return m, slave
}

// TestListenSerialOnPty runs the real ListenSerial path (open by absolute
// path, a pollable character device with deadlines) against a pty whose
// master plays the host.
func TestListenSerialOnPty(t *testing.T) {
	master, slave := openRawPty(t)
	log, _ := testLog(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, err := ListenSerial(ctx, log, slave)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	serveHTTP(t, l)

	sess := dialHost(t, &keepOpenConn{fileConn{master}})
	c := httpClient(sess)
	if got, err := get(c, "/hello"); err != nil || got != "hello" {
		t.Fatalf("GET /hello over a pty = %q, %v", got, err)
	}
	if err := echo(c, randBytes(256<<10)); err != nil {
		t.Fatal(err)
	}

	// The host agent restarts with no memory of the session while the
	// device stays connected (a pty never reports a disconnect, like a
	// restored VM): the new client's break must end the guest's session.
	sess.Close()
	sess2 := dialHost(t, fileConn{master})
	if got, err := get(httpClient(sess2), "/hello"); err != nil || got != "hello" {
		t.Fatalf("GET /hello after host restart = %q, %v", got, err)
	}
	start := time.Now()
	sess2.Close()
	l.Close()
	t.Logf("closed in %v", time.Since(start))
}

// keepOpenConn leaves the pty master open when a session closes: Close
// only wakes a blocked read, so the next session can use the same master.
type keepOpenConn struct{ fileConn }

func (c *keepOpenConn) Close() error { return c.SetDeadline(time.Unix(1, 0)) }

func TestListenSerialMissingPort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := ListenSerial(ctx, discardLog(), "org.wrenn.absent-in-tests"); err == nil {
		t.Fatal("ListenSerial of a missing port succeeded")
	}
}
