package transport

// This file is the host half of the virtio-serial handshake (see the
// package documentation), used to drive the guest side in tests.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/hashicorp/yamux"
)

var (
	hostMarkReady = []byte("WRENN-READY\n")
	hostMarkHello = []byte("WRENN-HELLO\n")
	hostMarkGo    = []byte("WRENN-GO\n")
	// hostBreak is an invalid yamux header (version 0xFF): a guest still in
	// a session from before a snapshot fails it and restarts its handshake.
	hostBreak = bytes.Repeat([]byte{0xFF}, 12)
)

// hostBreakAfter is how long the host waits for READY before each break.
const hostBreakAfter = 300 * time.Millisecond

// DialSerialHost runs the host half of the handshake on conn, a fresh
// connection to the QEMU chardev socket of the guest's envd port, and
// returns a yamux client session on it. It waits for the guest until ctx
// ends, sending breaks while the guest is silent. On error conn is left
// open for the caller to close; on success the session owns conn. Open
// streams with session.Open and speak HTTP on them.
func DialSerialHost(ctx context.Context, conn net.Conn) (*yamux.Session, error) {
	// Wake any blocked read or write when ctx ends. Deadlines set below are
	// always followed by a ctx check, so this wake-up is never lost.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	sc := hostScanner{conn: conn, buf: make([]byte, 4096)}
	// 1. READY, with a break each hostBreakAfter without it.
	next := time.Now().Add(hostBreakAfter)
	ready := newMatcher(hostMarkReady)
	for {
		err := sc.scan(ctx, ready, next)
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() != nil {
			return nil, hostErr(ctx, "wait for READY", err)
		}
		if err := hostWrite(ctx, conn, hostBreak); err != nil {
			return nil, hostErr(ctx, "write break", err)
		}
		next = time.Now().Add(hostBreakAfter)
	}
	// Whatever followed READY is more READY lines or noise: GO cannot come
	// before HELLO.
	sc.rest = nil
	// 2. HELLO.
	if err := hostWrite(ctx, conn, hostMarkHello); err != nil {
		return nil, hostErr(ctx, "write HELLO", err)
	}
	// 3. GO; what follows it is yamux.
	gm := newMatcher(hostMarkGo)
	for {
		err := sc.scan(ctx, gm, time.Now().Add(hostBreakAfter))
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() != nil {
			return nil, hostErr(ctx, "wait for GO", err)
		}
	}
	if !stop() {
		return nil, hostErr(ctx, "handshake", ctx.Err())
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("serial handshake: clear deadline: %w", err)
	}
	// 4. yamux client.
	sess, err := yamux.Client(&hostPrefixConn{Conn: conn, prefix: sc.rest}, HostYamuxConfig())
	if err != nil {
		return nil, fmt.Errorf("serial handshake: yamux client: %w", err)
	}
	// 5. One ping proves the guest really is in the session (a GO left
	// over from an older handshake would otherwise hand back a session
	// that dies on the guest's next READY).
	pinged := make(chan error, 1)
	go func() { _, err := sess.Ping(); pinged <- err }()
	select {
	case err = <-pinged:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		sess.Close()
		return nil, hostErr(ctx, "first ping", err)
	}
	return sess, nil
}

// HostYamuxConfig is the yamux client configuration DialSerialHost uses:
// 16 MiB stream windows for throughput, a 15 s keepalive, 10 s write
// timeout, logs discarded.
func HostYamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = true
	c.KeepAliveInterval = 15 * time.Second
	c.ConnectionWriteTimeout = 10 * time.Second
	c.MaxStreamWindowSize = 16 << 20
	c.LogOutput = io.Discard
	return c
}

func hostErr(ctx context.Context, step string, err error) error {
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return fmt.Errorf("serial handshake: %s: %w", step, err)
}

func hostWrite(ctx context.Context, conn net.Conn, b []byte) error {
	if err := conn.SetWriteDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	_, err := conn.Write(b)
	return err
}

// hostScanner reads from conn, discarding bytes until a matcher fires,
// and keeps the bytes after the match in rest.
type hostScanner struct {
	conn net.Conn
	buf  []byte
	rest []byte
}

// scan returns nil once m matched, or the read error (a deadline error
// when deadline passed first).
func (s *hostScanner) scan(ctx context.Context, m *matcher, deadline time.Time) error {
	for {
		if len(s.rest) > 0 {
			b := s.rest
			s.rest = nil
			if i := m.feed(b); i >= 0 {
				s.rest = b[i:]
				return nil
			}
		}
		if err := s.conn.SetReadDeadline(deadline); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := s.conn.Read(s.buf)
		if n > 0 {
			s.rest = append([]byte(nil), s.buf[:n]...)
			continue
		}
		if err != nil {
			return err
		}
	}
}

// hostPrefixConn replays bytes read past GO before reading conn.
type hostPrefixConn struct {
	net.Conn
	prefix []byte
}

func (c *hostPrefixConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}
