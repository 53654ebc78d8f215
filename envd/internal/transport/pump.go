package transport

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// errConnClosed is returned by reads of a session whose connection was
// closed while the port stays open for the next handshake.
var errConnClosed = errors.New("serial session closed")

const chunkSize = 64 << 10

// chunk is one read from the port: data, or an error (io.EOF: no host
// client is connected).
type chunk struct {
	b   []byte
	buf []byte // backing buffer, recycled once b is consumed
	err error
}

// pump is the only reader of the port for its whole life. It hands what it
// reads to one consumer at a time (the handshake, then a session, then the
// handshake again...). A consumer that is cancelled while waiting leaves
// the data for the next one, so no byte the host sends after a session
// ends can be swallowed by that dead session.
type pump struct {
	r      io.Reader
	log    *slog.Logger
	done   <-chan struct{}
	chunks chan chunk
	free   chan []byte

	mu      sync.Mutex // one consumer at a time
	pending []byte
	pendBuf []byte
}

func newPump(r io.Reader, log *slog.Logger, done <-chan struct{}) *pump {
	return &pump{
		r:      r,
		log:    log,
		done:   done,
		chunks: make(chan chunk, 4),
		free:   make(chan []byte, 6),
	}
}

// run reads until done is closed.
func (p *pump) run() {
	var lastErr string
	eofs := 0 // EOFs in a row
	for {
		var buf []byte
		select {
		case buf = <-p.free:
		default:
			buf = make([]byte, chunkSize)
		}
		n, err := p.r.Read(buf)
		if n > 0 {
			eofs = 0
			if !p.send(chunk{b: buf[:n], buf: buf}) {
				return
			}
		}
		if err == nil {
			continue
		}
		select {
		case <-p.done:
			return
		default:
		}
		backoff := min(eofBackoffMin<<min(eofs, 8), eofBackoff)
		eofs++
		if !errors.Is(err, io.EOF) {
			backoff = errBackoff
			if err.Error() != lastErr {
				p.log.Warn("serial port read failed", "err", err)
				lastErr = err.Error()
			}
		}
		if !p.send(chunk{err: err}) {
			return
		}
		select {
		case <-p.done:
			return
		case <-time.After(backoff):
		}
	}
}

func (p *pump) send(c chunk) bool {
	select {
	case p.chunks <- c:
		return true
	case <-p.done:
		return false
	}
}

// next makes pending non-empty. Called with mu held.
func (p *pump) next(cancel <-chan struct{}) error {
	for len(p.pending) == 0 {
		var c chunk
		select {
		case <-cancel:
			return errConnClosed
		case <-p.done:
			return net.ErrClosed
		case c = <-p.chunks:
		}
		if c.err != nil {
			return c.err
		}
		p.pending, p.pendBuf = c.b, c.buf
		// Data that arrived as the consumer was cancelled stays for the
		// next consumer.
		select {
		case <-cancel:
			return errConnClosed
		default:
		}
	}
	return nil
}

func (p *pump) consume(n int) {
	p.pending = p.pending[n:]
	if len(p.pending) == 0 && p.pendBuf != nil {
		select {
		case p.free <- p.pendBuf:
		default:
		}
		p.pendBuf = nil
	}
}

// read is io.Reader.Read for the consumer identified by cancel. Port EOFs
// and errors are returned as they come.
func (p *pump) read(b []byte, cancel <-chan struct{}) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-cancel:
		return 0, errConnClosed // what is pending belongs to the next consumer
	default:
	}
	if err := p.next(cancel); err != nil {
		return 0, err
	}
	n := copy(b, p.pending)
	p.consume(n)
	return n, nil
}

// discardUntil consumes and drops bytes until pat has been read, leaving
// whatever follows it unread. EOFs and read errors are skipped (run has
// already paused after them). It returns only on a match or when cancel or
// done is closed.
func (p *pump) discardUntil(pat []byte, cancel <-chan struct{}) error {
	return p.discardUntilNotify(pat, cancel, nil)
}

// discardUntilNotify is discardUntil that also calls skipped (when not
// nil) each time it has dropped bytes without completing pat: input the
// handshake answers with an immediate READY.
func (p *pump) discardUntilNotify(pat []byte, cancel <-chan struct{}, skipped func()) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := newMatcher(pat)
	for {
		if err := p.next(cancel); err != nil {
			if errors.Is(err, errConnClosed) || errors.Is(err, net.ErrClosed) {
				return err
			}
			continue
		}
		if i := m.feed(p.pending); i >= 0 {
			p.consume(i)
			return nil
		}
		p.consume(len(p.pending))
		if skipped != nil {
			skipped()
		}
	}
}
