package envdclient

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// DefaultEnvdPort is envd's port on TCP and on vsock.
const DefaultEnvdPort = 49983

// HybridVsockDialer reaches envd through Firecracker's hybrid vsock: a Unix
// socket on the host where each connection starts with `CONNECT <port>\n`
// and Firecracker answers `OK <host port>\n` once the guest accepted.
type HybridVsockDialer struct {
	Path string // the vsock uds_path
	Port uint32 // guest port; 0 means DefaultEnvdPort
}

// DialEnvd connects and runs the CONNECT handshake. Bytes the guest sends
// right after the OK line stay in the returned conn's read buffer.
func (d HybridVsockDialer) DialEnvd(ctx context.Context) (net.Conn, error) {
	port := d.Port
	if port == 0 {
		port = DefaultEnvdPort
	}
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "unix", d.Path)
	if err != nil {
		return nil, fmt.Errorf("dial hybrid vsock %s: %w", d.Path, err)
	}
	stop := deadlineFromContext(ctx, conn)
	r := bufio.NewReaderSize(conn, 4096)
	err = hybridVsockHandshake(conn, r, port)
	stop()
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return nil, fmt.Errorf("hybrid vsock %s port %d: %w", d.Path, port, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return &bufferedConn{Conn: conn, r: r}, nil
}

func hybridVsockHandshake(conn net.Conn, r *bufio.Reader, port uint32) error {
	if _, err := fmt.Fprintf(conn, "CONNECT %d\n", port); err != nil {
		return fmt.Errorf("write CONNECT: %w", err)
	}
	line, err := readLine(r, 64)
	if err != nil {
		return fmt.Errorf("read CONNECT reply (no guest listener?): %w", err)
	}
	rest, ok := strings.CutPrefix(line, "OK ")
	if !ok {
		return fmt.Errorf("unexpected CONNECT reply %q", line)
	}
	if _, err := strconv.ParseUint(rest, 10, 32); err != nil {
		return fmt.Errorf("unexpected CONNECT reply %q", line)
	}
	return nil
}

// readLine reads up to and without '\n', failing past max bytes.
func readLine(r *bufio.Reader, max int) (string, error) {
	var b []byte
	for len(b) <= max {
		c, err := r.ReadByte()
		if err != nil {
			return "", err
		}
		if c == '\n' {
			return string(b), nil
		}
		b = append(b, c)
	}
	return "", fmt.Errorf("line longer than %d bytes", max)
}
