package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
)

// DefaultSerialName is the virtserialport name the QEMU driver gives the
// envd channel.
const DefaultSerialName = "org.wrenn.envd"

// SerialAddr is the address of a serial listener and of its streams.
type SerialAddr struct{ Name string }

func (SerialAddr) Network() string  { return "virtio-serial" }
func (a SerialAddr) String() string { return a.Name }

// ListenSerial opens the virtio-serial port named nameOrPath (a port name
// such as DefaultSerialName, or an absolute device path) and returns a
// listener whose Accept yields yamux streams from whichever host client
// completes the handshake, across host reconnects and snapshot restores.
// It waits up to portWait for the device to appear. The listener closes
// when ctx ends or Close is called.
func ListenSerial(ctx context.Context, log *slog.Logger, nameOrPath string) (net.Listener, error) {
	path, err := waitPort(ctx, "/dev", "/sys/class/virtio-ports", nameOrPath)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open serial port %s: %w", path, err)
	}
	log.Info("serial port opened", "path", path)
	return newSerialListener(ctx, log, f, SerialAddr{Name: nameOrPath}, yamuxConfig(log)), nil
}

// serialListener runs handshake/session rounds on one port.
type serialListener struct {
	log  *slog.Logger
	addr SerialAddr
	port io.ReadWriteCloser
	pump *pump
	cfg  *yamux.Config

	wmu sync.Mutex // serialises writes to the port

	conns     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
	stopCtx   func() bool
	wg        sync.WaitGroup

	mu   sync.Mutex
	sess *yamux.Session
}

// newSerialListener serves on an already-open port. Tests pass an emulated
// port here; it takes ownership of port.
func newSerialListener(ctx context.Context, log *slog.Logger, port io.ReadWriteCloser, addr SerialAddr, cfg *yamux.Config) *serialListener {
	l := &serialListener{
		log:   log.With("transport", "serial", "port", addr.Name),
		addr:  addr,
		port:  port,
		cfg:   cfg,
		conns: make(chan net.Conn),
		done:  make(chan struct{}),
	}
	l.pump = newPump(port, l.log, l.done)
	l.stopCtx = context.AfterFunc(ctx, func() { l.Close() })
	l.wg.Add(2)
	go func() { defer l.wg.Done(); l.pump.run() }()
	go func() { defer l.wg.Done(); l.run() }()
	return l
}

// Accept returns the next stream opened by the host.
func (l *serialListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Addr returns the port's address.
func (l *serialListener) Addr() net.Addr { return l.addr }

// Close closes the current session (its streams fail) and the port, and
// waits for the listener's goroutines to finish.
func (l *serialListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.stopCtx()
		close(l.done)
		// The port first: that unblocks a write stuck on a host that
		// stopped reading, which the session's Close would wait for.
		err = l.port.Close()
		l.mu.Lock()
		sess := l.sess
		l.mu.Unlock()
		if sess != nil {
			sess.Close()
		}
		l.wg.Wait()
	})
	return err
}

func (l *serialListener) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// write writes to the port under wmu.
func (l *serialListener) write(b []byte) (int, error) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	return l.port.Write(b)
}

func (l *serialListener) run() {
	for round := 1; ; round++ {
		if err := l.handshake(); err != nil {
			return // only when closed
		}
		conn := &sessionConn{l: l, closed: make(chan struct{})}
		sess, err := yamux.Server(conn, l.cfg)
		if err != nil {
			l.log.Error("yamux server", "err", err)
			return
		}
		l.mu.Lock()
		l.sess = sess
		l.mu.Unlock()
		if l.closed() {
			sess.Close()
			return
		}
		l.log.Info("serial session started", "session", round)
		err = l.acceptLoop(sess)
		sess.Close()
		l.mu.Lock()
		l.sess = nil
		l.mu.Unlock()
		if l.closed() {
			return
		}
		l.log.Info("serial session ended, waiting for host", "session", round, "reason", err)
	}
}

// handshake runs the guest half up to and including GO. READY goes out at
// once, every readyInterval, and also right after any input that is not
// HELLO: a host that just connected (after a restore it sends a break
// first) hears READY without waiting for the next tick.
func (l *serialListener) handshake() error {
	stop := make(chan struct{})
	poke := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(readyInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = l.write(markReady) // dropped while no host is connected
			select {
			case <-stop:
				return
			case <-l.done:
				return
			case <-t.C:
			case <-poke:
			}
		}
	}()
	err := l.pump.discardUntilNotify(markHello, l.done, func() {
		select {
		case poke <- struct{}{}:
		default: // a READY is already due
		}
	})
	close(stop)
	wg.Wait()
	if err != nil {
		return err
	}
	if _, err := l.write(markGo); err != nil {
		l.log.Warn("write handshake GO", "err", err)
	}
	return nil
}

func (l *serialListener) acceptLoop(sess *yamux.Session) error {
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			return err
		}
		select {
		case l.conns <- st:
		case <-sess.CloseChan():
			st.Close()
			return errors.New("session closed")
		case <-l.done:
			st.Close()
			return net.ErrClosed
		}
	}
}

// sessionConn is the port as one yamux session sees it. Closing it ends
// the session's view (pending reads return, later writes fail) but leaves
// the port open for the next handshake.
type sessionConn struct {
	l         *serialListener
	closed    chan struct{}
	closeOnce sync.Once
}

func (c *sessionConn) Read(b []byte) (int, error) { return c.l.pump.read(b, c.closed) }

func (c *sessionConn) Write(b []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, errConnClosed
	default:
	}
	c.l.wmu.Lock()
	defer c.l.wmu.Unlock()
	select {
	case <-c.closed:
		return 0, errConnClosed
	default:
	}
	return c.l.port.Write(b)
}

// Close cancels pending reads and interrupts a write blocked on a host
// that stopped reading (where the port supports deadlines), then returns
// once no write of this session is in progress.
func (c *sessionConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		d, ok := c.l.port.(interface{ SetWriteDeadline(time.Time) error })
		if ok && d.SetWriteDeadline(time.Unix(1, 0)) != nil {
			ok = false
		}
		c.l.wmu.Lock()
		if ok {
			_ = d.SetWriteDeadline(time.Time{})
		}
		c.l.wmu.Unlock()
	})
	return nil
}

// LocalAddr and RemoteAddr let yamux streams report addresses.
func (c *sessionConn) LocalAddr() net.Addr  { return c.l.addr }
func (c *sessionConn) RemoteAddr() net.Addr { return SerialAddr{Name: "host"} }
