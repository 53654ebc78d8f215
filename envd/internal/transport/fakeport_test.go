package transport

import (
	"bytes"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// fakePort emulates a guest virtio-serial port behind a QEMU socket
// chardev, with the semantics of drivers/char/virtio_console.c and QEMU's
// virtio-console: a read returns EOF while no host client is connected and
// nothing is buffered; guest writes while no host is connected are
// dropped; a new host client is not announced in-band. Host clients are
// real connections (attach), and swap replaces the client without the
// guest seeing a disconnect, as a snapshot restore does.
type fakePort struct {
	mu     sync.Mutex
	cond   *sync.Cond
	buf    bytes.Buffer // host -> guest, not yet read by the guest
	host   net.Conn     // current host client, nil when none
	gen    int
	closed bool
}

func newFakePort() *fakePort {
	p := &fakePort{}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// Read is the guest's read(2) on the port.
func (p *fakePort) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.buf.Len() == 0 && p.host != nil && !p.closed {
		p.cond.Wait()
	}
	switch {
	case p.closed:
		return 0, os.ErrClosed
	case p.buf.Len() > 0:
		n, _ := p.buf.Read(b)
		p.cond.Broadcast()
		return n, nil
	default:
		return 0, io.EOF
	}
}

// Write is the guest's write(2) on the port.
func (p *fakePort) Write(b []byte) (int, error) {
	p.mu.Lock()
	h, closed := p.host, p.closed
	p.mu.Unlock()
	if closed {
		return 0, os.ErrClosed
	}
	if h != nil {
		_, _ = h.Write(b) // a write to a client that just left is dropped, as QEMU does
	}
	return len(b), nil
}

func (p *fakePort) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.cond.Broadcast()
	return nil
}

// attach makes conn the host client (QEMU accepted it).
func (p *fakePort) attach(conn net.Conn) {
	p.mu.Lock()
	p.gen++
	gen := p.gen
	p.host = conn
	p.cond.Broadcast()
	p.mu.Unlock()
	go p.fromHost(conn, gen)
}

// swap replaces the host client without the guest seeing it leave.
func (p *fakePort) swap(conn net.Conn) { p.attach(conn) }

// connected reports whether a host client is attached.
func (p *fakePort) connected() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.host != nil
}

func (p *fakePort) fromHost(conn net.Conn, gen int) {
	b := make([]byte, 32<<10)
	for {
		n, err := conn.Read(b)
		p.mu.Lock()
		for p.buf.Len() > 1<<20 && p.gen == gen && !p.closed {
			p.cond.Wait() // the guest is not reading: stop reading the socket
		}
		if p.gen != gen || p.closed {
			p.mu.Unlock()
			return
		}
		p.buf.Write(b[:n])
		if err != nil {
			p.host = nil // the client left: the guest will read EOF
		}
		p.cond.Broadcast()
		p.mu.Unlock()
		if err != nil {
			conn.Close()
			return
		}
	}
}

// fakeChardev is QEMU's `-chardev socket,server=on,wait=off`: a Unix socket
// that serves one client at a time and accepts the next when it leaves.
type fakeChardev struct {
	path string
	ln   net.Listener
	port *fakePort
	wg   sync.WaitGroup
}

func startFakeChardev(t *testing.T, port *fakePort) *fakeChardev {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c := &fakeChardev{path: path, ln: ln, port: port}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			port.attach(conn)
			port.mu.Lock()
			for port.host == conn && !port.closed {
				port.cond.Wait()
			}
			port.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		port.Close()
		c.wg.Wait()
	})
	return c
}

func (c *fakeChardev) dial(t *testing.T) net.Conn {
	t.Helper()
	conn, err := net.Dial("unix", c.path)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}
