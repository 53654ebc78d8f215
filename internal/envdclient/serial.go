package envdclient

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
)

// ErrDialerClosed is returned by a SerialDialer after Close.
var ErrDialerClosed = errors.New("envd dialer closed")

// SerialOptions configures a SerialDialer.
type SerialOptions struct {
	Log *slog.Logger
	// Stale says the guest may still be inside a session from before a
	// snapshot, so the first handshake sends the break at once instead of
	// after 300 ms of silence.
	Stale bool
	// KeepAliveInterval for the yamux session; 0 means 15 s. A session
	// whose pings go unanswered (a VM paused for long) is closed and
	// re-established on the next dial.
	KeepAliveInterval time.Duration
	// AnswerWait is how long one connection waits for the guest's first
	// READY before the dialer hangs up and connects again; 0 means 2 s.
	AnswerWait time.Duration
}

// SerialDialer reaches envd over QEMU's virtio-serial channel: the unix
// socket QEMU serves for the org.wrenn.envd port. It keeps one yamux client
// session per VM (the port is a single stream and QEMU serves one host
// connection at a time) and opens one yamux stream per DialEnvd. A session
// that died (guest restored from a snapshot, connection lost) is replaced
// on the next dial. Safe for concurrent use.
type SerialDialer struct {
	path string
	log  *slog.Logger
	cfg  *yamux.Config

	sem chan struct{} // held while a session is being established

	mu     sync.Mutex
	sess   *yamux.Session
	stale  bool
	closed bool

	answerWait time.Duration

	sessions atomic.Int64
	breaks   atomic.Int64
	redials  atomic.Int64
}

// NewSerialDialer returns a dialer for the QEMU chardev socket at path. It
// does not connect until Connect or DialEnvd.
func NewSerialDialer(path string, o SerialOptions) *SerialDialer {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = io.Discard
	cfg.KeepAliveInterval = 15 * time.Second
	if o.KeepAliveInterval > 0 {
		cfg.KeepAliveInterval = o.KeepAliveInterval
	}
	cfg.ConnectionWriteTimeout = 10 * time.Second
	cfg.MaxStreamWindowSize = 16 << 20 // as envd's side: file transfers fill the link
	cfg.StreamOpenTimeout = 30 * time.Second
	if o.AnswerWait <= 0 {
		o.AnswerWait = answerWait
	}
	return &SerialDialer{
		answerWait: o.AnswerWait,
		path:       path,
		log:        o.Log,
		cfg:        cfg,
		sem:        make(chan struct{}, 1),
		stale:      o.Stale,
	}
}

// SerialStats counts sessions established, breaks sent and connections
// given up for want of an answer.
type SerialStats struct {
	Sessions int64
	Breaks   int64
	Redials  int64
}

// Stats reports counters since the dialer was made.
func (d *SerialDialer) Stats() SerialStats {
	return SerialStats{Sessions: d.sessions.Load(), Breaks: d.breaks.Load(), Redials: d.redials.Load()}
}

// Connect makes sure a live session exists, waiting (bounded by ctx) for
// QEMU's socket to appear and for the guest to answer the handshake. A VM
// driver uses it to learn that the guest is up.
func (d *SerialDialer) Connect(ctx context.Context) error {
	_, err := d.session(ctx)
	return err
}

// DialEnvd opens a new stream to envd.
func (d *SerialDialer) DialEnvd(ctx context.Context) (net.Conn, error) {
	for attempt := 0; ; attempt++ {
		s, err := d.session(ctx)
		if err != nil {
			return nil, err
		}
		st, err := s.OpenStream()
		if err == nil {
			return st, nil
		}
		d.drop(s)
		if attempt == 1 || ctx.Err() != nil {
			return nil, fmt.Errorf("open envd stream: %w", err)
		}
	}
}

// Reset closes the current session, if any. The next dial handshakes
// again and sends the break at once. Call it after a snapshot is restored
// or when the guest is known to have lost its session.
func (d *SerialDialer) Reset() {
	d.mu.Lock()
	s := d.sess
	d.sess = nil
	d.stale = true
	d.mu.Unlock()
	if s != nil {
		s.Close()
	}
}

// Quiesce prepares the channel for a snapshot: it ends the current
// session (its streams fail), connects and waits until the guest is back
// in handshake mode (READY seen; breaks are sent if it does not come), and
// holds the channel there, blocking new sessions, until release is called.
// The break is sent at once.
// A snapshot taken in between has the guest waiting for a host, so the
// restored guest answers at once and no old session has to be broken
// (a break can be swallowed by a half-received frame). Call release after
// the snapshot completes; the next dial then handshakes afresh.
func (d *SerialDialer) Quiesce(ctx context.Context) (release func(), err error) {
	select {
	case d.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("quiesce envd channel %s: %w", d.path, ctx.Err())
	}
	unlock := func() { <-d.sem }
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		unlock()
		return nil, ErrDialerClosed
	}
	s := d.sess
	d.sess = nil
	d.stale = s != nil || d.stale
	d.mu.Unlock()
	if s != nil {
		s.Close()
	}
	start := time.Now()
	// Break at once: the guest may not notice that the old session's
	// connection went away (measured: it kept the session until a break).
	conn, _, hs, err := d.handshake(ctx, true, true)
	if err != nil {
		unlock()
		return nil, fmt.Errorf("quiesce envd channel %s: %w", d.path, err)
	}
	d.log.Debug("envd channel quiesced", "socket", d.path, "took", time.Since(start),
		"breaks", hs.Breaks, "redials", hs.Redials)
	var once sync.Once
	return func() {
		once.Do(func() {
			conn.Close()
			d.mu.Lock()
			d.stale = false // the guest waits in handshake mode
			d.mu.Unlock()
			unlock()
		})
	}, nil
}

// Close ends the session and makes later dials fail with ErrDialerClosed.
func (d *SerialDialer) Close() error {
	d.mu.Lock()
	s := d.sess
	d.sess = nil
	d.closed = true
	d.mu.Unlock()
	if s != nil {
		return s.Close()
	}
	return nil
}

func (d *SerialDialer) drop(s *yamux.Session) {
	d.mu.Lock()
	if d.sess == s {
		d.sess = nil
		d.stale = true
	}
	d.mu.Unlock()
	s.Close()
}

func (d *SerialDialer) current() (*yamux.Session, bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, false, ErrDialerClosed
	}
	if d.sess != nil && !d.sess.IsClosed() {
		return d.sess, false, nil
	}
	if d.sess != nil {
		d.sess = nil
		d.stale = true
	}
	return nil, d.stale, nil
}

// session returns the live session, establishing one if needed.
func (d *SerialDialer) session(ctx context.Context) (*yamux.Session, error) {
	if s, _, err := d.current(); s != nil || err != nil {
		return s, err
	}
	select {
	case d.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("envd channel %s: %w", d.path, ctx.Err())
	}
	defer func() { <-d.sem }()
	s, stale, err := d.current()
	if s != nil || err != nil {
		return s, err
	}
	start := time.Now()
	conn, r, hs, err := d.handshake(ctx, stale, false)
	if err != nil {
		return nil, fmt.Errorf("envd channel %s: %w", d.path, err)
	}
	s, err = yamux.Client(&bufferedConn{Conn: conn, r: r}, d.cfg)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("envd channel %s: start yamux: %w", d.path, err)
	}
	d.sessions.Add(1)
	d.log.Debug("envd channel session established", "socket", d.path,
		"took", time.Since(start), "breaks", hs.Breaks, "skipped_bytes", hs.Skipped, "redials", hs.Redials)
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		s.Close()
		return nil, ErrDialerClosed
	}
	d.sess = s
	d.stale = false
	d.mu.Unlock()
	return s, nil
}

// handshake connects to QEMU's socket and runs the handshake, hanging up
// and connecting again each time a connection goes answerWait without a
// READY (see answerWait), until it succeeds or ctx ends. Breaks are
// counted in the dialer's stats either way.
func (d *SerialDialer) handshake(ctx context.Context, breakFirst, readyOnly bool) (net.Conn, *bufio.Reader, handshakeStats, error) {
	var total handshakeStats
	for {
		conn, err := dialUnixRetry(ctx, d.path)
		if err != nil {
			return nil, nil, total, err
		}
		r, hs, err := serialHandshake(ctx, conn, breakFirst, readyOnly, d.answerWait)
		total.add(hs)
		d.breaks.Add(int64(hs.Breaks))
		if err == nil {
			return conn, r, total, nil
		}
		conn.Close()
		if !errors.Is(err, errNoAnswer) || ctx.Err() != nil {
			return nil, nil, total, err
		}
		total.Redials++
		d.redials.Add(1)
		// The guest may be inside a session the old connection left.
		breakFirst = true
	}
}

// dialUnixRetry connects to a unix socket that may not exist yet (QEMU is
// still starting), retrying every few milliseconds until ctx ends.
func dialUnixRetry(ctx context.Context, path string) (net.Conn, error) {
	var nd net.Dialer
	delay := 2 * time.Millisecond
	for {
		conn, err := nd.DialContext(ctx, "unix", path)
		if err == nil {
			return conn, nil
		}
		if !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("dial envd channel %s: %w", path, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("dial envd channel %s: %w (last: %w)", path, ctx.Err(), err)
		}
		if delay < 20*time.Millisecond {
			delay *= 2
		}
	}
}
