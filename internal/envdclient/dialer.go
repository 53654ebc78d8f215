package envdclient

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"time"
)

// aLongTimeAgo is a deadline in the past, used to abort blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// Dialer opens a new byte stream to envd's HTTP server in one guest.
// vm.Instance satisfies it.
type Dialer interface {
	DialEnvd(ctx context.Context) (net.Conn, error)
}

// DialerFunc adapts a function to Dialer.
type DialerFunc func(ctx context.Context) (net.Conn, error)

// DialEnvd calls f.
func (f DialerFunc) DialEnvd(ctx context.Context) (net.Conn, error) { return f(ctx) }

// TCPDialer reaches envd over TCP, for envd running on loopback in tests
// and development.
type TCPDialer struct {
	Addr string // host:port, e.g. 127.0.0.1:49983
}

// DialEnvd opens a TCP connection to Addr.
func (d TCPDialer) DialEnvd(ctx context.Context) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", d.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial envd tcp %s: %w", d.Addr, err)
	}
	return c, nil
}

// bufferedConn is a net.Conn whose reads go through a bufio.Reader that
// may already hold bytes read past a handshake line.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// deadlineFromContext applies ctx's deadline to conn and, until the
// returned stop is called, makes a cancellation of ctx unblock pending I/O.
func deadlineFromContext(ctx context.Context, conn net.Conn) (stop func()) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	cancelIO := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(aLongTimeAgo) })
	return func() {
		cancelIO()
	}
}
