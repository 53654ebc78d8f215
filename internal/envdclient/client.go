package envdclient

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/proto/envd/gen/filesystem/filesystemconnect"
	"github.com/wrenn-dev/wrenn-sandbox/proto/envd/gen/process/processconnect"
)

// baseURL is the URL every request uses; the host part is never resolved,
// the Dialer decides where bytes go.
const baseURL = "http://envd"

// Options configures a Client.
type Options struct {
	// AccessToken is sent as X-Access-Token (set later with SetAccessToken
	// or by Init).
	AccessToken string
	// User, when set, is sent as Basic auth to run as that guest user.
	User string
	// H2C speaks cleartext HTTP/2 (prior knowledge) over one connection
	// instead of HTTP/1.1 over a pool; fewer dials, one stream for all.
	H2C bool
	Log *slog.Logger
}

// Client talks to one envd over a Dialer. Safe for concurrent use.
type Client struct {
	dialer Dialer
	log    *slog.Logger
	tr     *http.Transport
	http   *http.Client

	mu    sync.RWMutex
	token string
	user  string

	// Process and Filesystem are envd's Connect services.
	Process    processconnect.ProcessClient
	Filesystem filesystemconnect.FilesystemClient
}

// New returns a Client that opens its connections through d.
func New(d Dialer, o Options) *Client {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	c := &Client{dialer: d, log: o.Log, token: o.AccessToken, user: o.User}
	c.tr = &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialEnvd(ctx)
		},
		MaxIdleConns:          32,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // process streams may wait long for output
	}
	if o.H2C {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		c.tr.Protocols = &p
	}
	c.http = &http.Client{Transport: &headerTransport{c: c, next: c.tr}}
	c.Process = processconnect.NewProcessClient(c.http, baseURL)
	c.Filesystem = filesystemconnect.NewFilesystemClient(c.http, baseURL)
	return c
}

// HTTPClient is the underlying client, for routes this package does not wrap.
func (c *Client) HTTPClient() *http.Client { return c.http }

// SetAccessToken changes the X-Access-Token sent from now on.
func (c *Client) SetAccessToken(tok string) {
	c.mu.Lock()
	c.token = tok
	c.mu.Unlock()
}

// SetUser changes the guest user requests run as ("" = envd's default).
func (c *Client) SetUser(u string) {
	c.mu.Lock()
	c.user = u
	c.mu.Unlock()
}

// Reset drops pooled connections. Call it after the guest was restored
// from a snapshot: its old streams are gone and must not be reused.
func (c *Client) Reset() {
	c.tr.CloseIdleConnections()
	if r, ok := c.dialer.(interface{ Reset() }); ok {
		r.Reset()
	}
}

// Close releases pooled connections.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

type headerTransport struct {
	c    *Client
	next http.RoundTripper
}

func (t *headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.c.mu.RLock()
	tok, user := t.c.token, t.c.user
	t.c.mu.RUnlock()
	if tok == "" && user == "" {
		return t.next.RoundTrip(r)
	}
	r = r.Clone(r.Context())
	if tok != "" && r.Header.Get("X-Access-Token") == "" {
		r.Header.Set("X-Access-Token", tok)
	}
	if user != "" && r.Header.Get("Authorization") == "" {
		r.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":")))
	}
	return t.next.RoundTrip(r)
}

// HTTPError is a non-success status from envd's plain HTTP routes.
type HTTPError struct {
	Route   string
	Status  int
	Message string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("envd %s: status %d: %s", e.Route, e.Status, e.Message)
}

// httpError reads an error body ({"message":...} or text) into an HTTPError.
func httpError(route string, resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	msg := string(bytes.TrimSpace(body))
	var j struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &j) == nil && j.Message != "" {
		msg = j.Message
	}
	return &HTTPError{Route: route, Status: resp.StatusCode, Message: msg}
}

// Health asks GET /health once and returns envd's version header.
func (c *Client) Health(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/health", nil)
	if err != nil {
		return "", err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("envd health: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		return "", httpError("health", resp)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Header.Get("X-Envd-Version"), nil
}

// Backoff bounds the retries of WaitHealthy.
type Backoff struct {
	Initial time.Duration // first wait; default 10 ms
	Max     time.Duration // cap on one wait; default 500 ms
	// PerTry bounds one health request; default 2 s.
	PerTry time.Duration
}

// WaitHealthy calls Health until it succeeds or ctx ends, waiting with
// exponential backoff between tries and dropping pooled connections after
// each failure (so a restored guest gets fresh ones). It returns envd's
// version and the number of failed tries.
func (c *Client) WaitHealthy(ctx context.Context, b Backoff) (string, int, error) {
	if b.Initial <= 0 {
		b.Initial = 10 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 500 * time.Millisecond
	}
	if b.PerTry <= 0 {
		b.PerTry = 2 * time.Second
	}
	wait := b.Initial
	for failures := 0; ; failures++ {
		tctx, cancel := context.WithTimeout(ctx, b.PerTry)
		v, err := c.Health(tctx)
		cancel()
		if err == nil {
			return v, failures, nil
		}
		c.tr.CloseIdleConnections()
		c.log.Debug("envd not healthy yet", "err", err, "failures", failures+1)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return "", failures + 1, fmt.Errorf("wait for envd health: %w (last: %w)", ctx.Err(), err)
		}
		wait = min(wait*2, b.Max)
	}
}

// InitRequest is the body of POST /init.
type InitRequest struct {
	AccessToken    string            `json:"accessToken,omitempty"`
	EnvVars        map[string]string `json:"envVars,omitempty"`
	DefaultUser    string            `json:"defaultUser,omitempty"`
	DefaultWorkdir string            `json:"defaultWorkdir,omitempty"`
	Hostname       string            `json:"hostname,omitempty"`
	// Timestamp sets the guest clock (after a restore it is stale).
	Timestamp time.Time `json:"timestamp,omitzero"`
	// Entropy is mixed into the guest's random pool. Init fills it with
	// fresh random bytes when empty, so clones of one snapshot diverge.
	Entropy []byte `json:"entropy,omitempty"`
}

// Init posts /init. On success a non-empty AccessToken becomes the token
// this client sends from now on.
func (c *Client) Init(ctx context.Context, in InitRequest) error {
	if len(in.Entropy) == 0 {
		in.Entropy = make([]byte, 32)
		if _, err := rand.Read(in.Entropy); err != nil {
			return fmt.Errorf("envd init: entropy: %w", err)
		}
	}
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("envd init: encode: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/init", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("envd init: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		return httpError("init", resp)
	}
	if in.AccessToken != "" {
		c.SetAccessToken(in.AccessToken)
	}
	return nil
}
