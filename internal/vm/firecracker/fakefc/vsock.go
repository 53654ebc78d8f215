package fakefc

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Hybrid vsock, host-initiated side, as Firecracker implements it: a host
// process connects to the device's UDS, writes `CONNECT <port>\n`, and gets
// `OK <host_port>\n` once the guest accepted; after that the stream is the
// guest connection. A malformed command, a port nobody listens on or a guest
// that does not answer within connRequestTimeout closes the connection
// without an OK.

const (
	connRequestTimeout = 2000 * time.Millisecond // CONN_REQUEST_TIMEOUT_MS
	maxConnectLine     = 32
	firstHostPort      = uint32(1) << 30
)

type vsockDevice struct {
	vmm  *VMM
	ln   *net.UnixListener
	path string

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	nextPort uint32
	closed   bool
}

func newVsockDevice(v *VMM, ln *net.UnixListener, path string) *vsockDevice {
	d := &vsockDevice{vmm: v, ln: ln, path: path, conns: map[net.Conn]struct{}{}, nextPort: firstHostPort}
	go d.acceptLoop()
	return d
}

func (d *vsockDevice) acceptLoop() {
	for {
		c, err := d.ln.Accept()
		if err != nil {
			return
		}
		if !d.track(c) {
			_ = c.Close()
			return
		}
		go d.handle(c)
	}
}

func (d *vsockDevice) track(c net.Conn) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false
	}
	d.conns[c] = struct{}{}
	return true
}

func (d *vsockDevice) untrack(c net.Conn) {
	d.mu.Lock()
	delete(d.conns, c)
	d.mu.Unlock()
	_ = c.Close()
}

// hostPort hands out local port numbers round-robin in [1<<30, 1<<31).
func (d *vsockDevice) hostPort() uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.nextPort
	d.nextPort++
	if d.nextPort >= 1<<31 {
		d.nextPort = firstHostPort
	}
	return p
}

func (d *vsockDevice) handle(host net.Conn) {
	defer d.untrack(host)
	_ = host.SetReadDeadline(time.Now().Add(connRequestTimeout))
	line, err := readConnectLine(host)
	if err != nil {
		return
	}
	port, err := ParseConnect(line)
	if err != nil || port != EnvdPort {
		return // malformed, or a guest port nobody listens on
	}
	guestConn := d.dialGuest()
	if guestConn == nil {
		return
	}
	if !d.track(guestConn) {
		_ = guestConn.Close()
		return
	}
	defer d.untrack(guestConn)
	_ = host.SetReadDeadline(time.Time{})
	if _, err := fmt.Fprintf(host, "OK %d\n", d.hostPort()); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(guestConn, host); closeWrite(guestConn); done <- struct{}{} }()
	go func() { _, _ = io.Copy(host, guestConn); closeWrite(host); done <- struct{}{} }()
	<-done
	<-done
}

// dialGuest waits (up to the request timeout) for a running guest and
// connects to envd. A paused VM does not answer a connection request, so
// it is held until the VM resumes or the timeout closes it.
func (d *vsockDevice) dialGuest() net.Conn {
	deadline := time.Now().Add(connRequestTimeout)
	for {
		if d.vmm.runState() == stateRunning {
			port := d.vmm.guestPort()
			if port == 0 {
				return nil
			}
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Until(deadline))
			if err != nil {
				return nil // no listener in the guest: RST, closed without OK
			}
			return c
		}
		if time.Now().After(deadline) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// reset closes every open connection (VIRTIO_VSOCK_EVENT_TRANSPORT_RESET,
// sent by Firecracker at snapshot create). The listener stays.
func (d *vsockDevice) reset() {
	d.mu.Lock()
	conns := d.conns
	d.conns = map[net.Conn]struct{}{}
	d.mu.Unlock()
	for c := range conns {
		_ = c.Close()
	}
}

// close stops the device: listener and connections. The socket file stays,
// as Firecracker leaves it. It does not wait for the connection goroutines
// (they may be waiting for the VMM lock the caller holds); they end on
// their own once their connections are closed.
func (d *vsockDevice) close() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed = true
	d.mu.Unlock()
	_ = d.ln.Close()
	d.reset()
}

// readConnectLine reads byte by byte up to '\n' (so nothing after the
// command is consumed), at most maxConnectLine bytes.
func readConnectLine(r io.Reader) (string, error) {
	var b [1]byte
	var sb strings.Builder
	for sb.Len() < maxConnectLine {
		if _, err := r.Read(b[:]); err != nil {
			return "", err
		}
		if b[0] == '\n' {
			return sb.String(), nil
		}
		sb.WriteByte(b[0])
	}
	return "", errors.New("connect command too long")
}

// ParseConnect parses a hybrid-vsock connect command without its newline:
// `CONNECT <port>`, the word case-insensitive, one space, a decimal u32.
func ParseConnect(line string) (uint32, error) {
	word, num, ok := strings.Cut(line, " ")
	if !ok || !strings.EqualFold(word, "connect") {
		return 0, fmt.Errorf("malformed connect command %q", line)
	}
	if num == "" || strings.TrimLeft(num, "0123456789") != "" {
		return 0, fmt.Errorf("malformed port in %q", line)
	}
	p, err := strconv.ParseUint(num, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("port in %q: %w", line, err)
	}
	return uint32(p), nil
}
