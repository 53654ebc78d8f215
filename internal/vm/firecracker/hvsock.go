package firecracker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// EnvdPort is the vsock port envd listens on in the guest.
const EnvdPort = 49983

// handshakeTimeout bounds the CONNECT/OK exchange when ctx has no earlier
// deadline. Firecracker itself gives the guest 2 s to accept.
const handshakeTimeout = 5 * time.Second

// DialHybridVsock opens a stream to guest port over a Firecracker
// hybrid-vsock Unix socket: connect, send `CONNECT <port>\n`, read
// `OK <host_port>\n`. The returned conn reads through the buffered reader
// that read the OK line, because guest bytes may follow it in the same read.
func DialHybridVsock(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", udsPath)
	if err != nil {
		return nil, fmt.Errorf("dial vsock %s: %w", udsPath, err)
	}
	deadline := time.Now().Add(handshakeTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	_ = c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	conn, err := handshake(c, port)
	if !stop() || err != nil {
		_ = c.Close()
		// The socket deadline is ctx's deadline, and may fire a moment
		// before ctx itself reports it.
		cerr := ctx.Err()
		if dl, ok := ctx.Deadline(); cerr == nil && ok && !time.Now().Before(dl) {
			cerr = context.DeadlineExceeded
		}
		if cerr != nil {
			err = errors.Join(cerr, err)
		}
		return nil, fmt.Errorf("vsock connect to port %d via %s: %w", port, udsPath, err)
	}
	_ = c.SetDeadline(time.Time{})
	return conn, nil
}

func handshake(c net.Conn, port uint32) (net.Conn, error) {
	if _, err := fmt.Fprintf(c, "CONNECT %d\n", port); err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(c, 4096)
	line, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, errors.New("answer line too long")
		}
		// EOF without OK: no listener in the guest, the guest did not
		// answer in time (paused VM), or a malformed request.
		return nil, fmt.Errorf("no OK from the VMM: %w", err)
	}
	if _, err := ParseOK(string(line)); err != nil {
		return nil, err
	}
	return &bufConn{Conn: c, r: br}, nil
}

// ParseOK parses Firecracker's `OK <host_port>\n` answer.
func ParseOK(line string) (uint32, error) {
	rest, ok := strings.CutPrefix(line, "OK ")
	if !ok || !strings.HasSuffix(rest, "\n") {
		return 0, fmt.Errorf("unexpected vsock answer %q", line)
	}
	n, err := strconv.ParseUint(strings.TrimSuffix(rest, "\n"), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("unexpected vsock answer %q: %w", line, err)
	}
	return uint32(n), nil
}

// bufConn is a net.Conn whose reads go through the reader that consumed
// the handshake.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// CloseWrite half-closes the underlying Unix socket.
func (b *bufConn) CloseWrite() error {
	if cw, ok := b.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("close write not supported")
}
