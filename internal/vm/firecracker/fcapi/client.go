// Package fcapi is a small typed client for the Firecracker REST API: HTTP/1.1
// over the VMM's Unix socket, one method per endpoint, the exact JSON field
// names of swagger 1.16.1, and a typed *APIError for the 400/413 fault
// answers. It knows nothing about processes, jails or the vm contract and
// imports nothing from the rest of Wrenn.
package fcapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// MaxPayload is Firecracker's default cap on a request body
// (--http-api-max-payload-size).
const MaxPayload = 51200

// APIError is a non-2xx answer. Firecracker sends 400 with a fault_message
// for every VMM error and for unknown paths or methods, and 413 when the
// MMDS data store limit is exceeded.
type APIError struct {
	Status       int
	FaultMessage string
	Method       string
	Path         string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("firecracker %s %s: %d: %s", e.Method, e.Path, e.Status, e.FaultMessage)
}

// IsAPIError reports whether err carries an *APIError with this status
// (any status when status is 0).
func IsAPIError(err error, status int) bool {
	var ae *APIError
	return errors.As(err, &ae) && (status == 0 || ae.Status == status)
}

// Client talks to one Firecracker API socket. Firecracker serves requests
// one at a time; the client may be used concurrently, calls simply queue.
type Client struct {
	socket string
	hc     *http.Client
}

// New returns a client for the API socket at path. It does not connect.
func New(socketPath string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConns:        2,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     30 * time.Second,
		DisableCompression:  true,
	}
	return &Client{socket: socketPath, hc: &http.Client{Transport: tr}}
}

// SocketPath is the API socket this client talks to.
func (c *Client) SocketPath() string { return c.socket }

// Close drops idle connections.
func (c *Client) Close() {
	c.hc.CloseIdleConnections()
}

// do sends one request; in is marshalled as the body when non-nil, and a
// 200 answer is decoded into out when non-nil.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	switch v := in.(type) {
	case nil:
	case []byte: // sent as is (tests send malformed bodies on purpose)
		body = bytes.NewReader(v)
	case json.RawMessage:
		body = bytes.NewReader(v)
	default:
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("firecracker %s %s: encode body: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, body)
	if err != nil {
		return fmt.Errorf("firecracker %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("firecracker %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("firecracker %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ae := &APIError{Status: resp.StatusCode, Method: method, Path: path}
		var f Fault
		if json.Unmarshal(raw, &f) == nil && f.FaultMessage != "" {
			ae.FaultMessage = f.FaultMessage
		} else {
			ae.FaultMessage = string(bytes.TrimSpace(raw))
		}
		return ae
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("firecracker %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// Bool returns a pointer to b, for the optional booleans that must be sent
// even when false (Drive.IsReadOnly).
func Bool(b bool) *bool { return &b }
