package envdclient

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// The virtio-serial channel handshake, as envd's transport package
// defines it (envd/internal/transport/doc.go). A virtio-serial port is one
// byte stream that outlives any host connection and is frozen into
// snapshots, so both ends first agree that a fresh yamux session starts:
//
//	guest: WRENN-READY\n at once and every 100 ms while it waits for a host
//	host:  each 300 ms without READY (from connecting, then from the last
//	       break): 12 bytes 0xFF, a "break" no yamux peer accepts as a
//	       header, so a guest still inside an old session fails it
//	host:  WRENN-HELLO\n once it has seen READY
//	guest: WRENN-GO\n, then serves yamux; bytes after GO are yamux
//
// Everything that is not the awaited marker is skipped.
const (
	readyMarker = "WRENN-READY\n"
	helloMarker = "WRENN-HELLO\n"
	goMarker    = "WRENN-GO\n"
	breakLen    = 12
)

// Handshake timings.
const (
	breakEvery = 300 * time.Millisecond // READY not seen for this long: send a break
	goWait     = 2 * time.Second        // no GO this long after HELLO: wait for READY again
	// answerWait is how long one connection waits for a first READY
	// before the host hangs up and connects again. Closing and reopening
	// QEMU's chardev resets the port on both sides (QEMU drops a stuck
	// throttle, the guest gets fresh port-open events), which a guest
	// whose READYs stopped reaching the host needs; a guest still booting
	// is not disturbed by it.
	answerWait = 2 * time.Second
)

// breakBytes is the break: 0xFF is never a valid yamux version byte.
var breakBytes = bytes.Repeat([]byte{0xFF}, breakLen)

// ErrHandshake wraps failures of the virtio-serial handshake.
var ErrHandshake = errors.New("envd channel handshake failed")

// errNoAnswer: no READY arrived within answerWait of connecting.
var errNoAnswer = errors.New("no READY from the guest")

// handshakeStats counts what one handshake did, for logs and tests.
type handshakeStats struct {
	Breaks  int
	Hellos  int
	Skipped int // bytes skipped that belonged to no marker
	Redials int // connections given up for want of a READY
}

// add folds o into st.
func (st *handshakeStats) add(o handshakeStats) {
	st.Breaks += o.Breaks
	st.Hellos += o.Hellos
	st.Skipped += o.Skipped
	st.Redials += o.Redials
}

// serialHandshake runs the host side of the handshake on conn. With
// breakFirst the break is sent at once (the caller knows the guest may be
// inside a stale session: after a restore or a lost connection). It returns
// the reader holding any bytes already read past GO. With readyOnly it
// returns as soon as READY was read, before HELLO: the guest is then
// known to be in handshake mode and stays there. When answer is not zero
// and no READY has arrived that long after the start, it gives up with
// errNoAnswer so that the caller can connect again.
func serialHandshake(ctx context.Context, conn net.Conn, breakFirst, readyOnly bool, answer time.Duration) (*bufio.Reader, handshakeStats, error) {
	var st handshakeStats
	var answerBy time.Time // zero once READY was seen, or when answer is 0
	if answer > 0 {
		answerBy = time.Now().Add(answer)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(aLongTimeAgo) })
	defer stop()
	ctxDeadline, hasDeadline := ctx.Deadline()
	write := func(b []byte) error {
		if hasDeadline {
			_ = conn.SetWriteDeadline(ctxDeadline)
		}
		_, err := conn.Write(b)
		return err
	}
	if breakFirst {
		if err := write(breakBytes); err != nil {
			return nil, st, fmt.Errorf("%w: write break: %w", ErrHandshake, err)
		}
		st.Breaks++
	}
	r := bufio.NewReaderSize(conn, 4096)
	want := readyMarker
	matched := 0
	next := time.Now().Add(breakEvery) // when to break (READY) or give up on GO
	for {
		if r.Buffered() == 0 {
			dl := next
			if hasDeadline && ctxDeadline.Before(dl) {
				dl = ctxDeadline
			}
			_ = conn.SetReadDeadline(dl)
		}
		c, err := r.ReadByte()
		if err != nil {
			if ctx.Err() != nil {
				return nil, st, fmt.Errorf("%w: %w", ErrHandshake, ctx.Err())
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				return nil, st, fmt.Errorf("%w: read: %w", ErrHandshake, err)
			}
			if hasDeadline && !time.Now().Before(ctxDeadline) {
				return nil, st, fmt.Errorf("%w: %w", ErrHandshake, context.DeadlineExceeded)
			}
			if !answerBy.IsZero() && !time.Now().Before(answerBy) {
				return nil, st, fmt.Errorf("%w: %w after %v", ErrHandshake, errNoAnswer, answer)
			}
			if want == goMarker {
				// HELLO went unanswered: start over from READY.
				want, matched = readyMarker, 0
			}
			if err := write(breakBytes); err != nil {
				return nil, st, fmt.Errorf("%w: write break: %w", ErrHandshake, err)
			}
			st.Breaks++
			next = time.Now().Add(breakEvery)
			continue
		}
		switch {
		case c == want[matched]:
			matched++
		case c == want[0]:
			st.Skipped += matched
			matched = 1
		default:
			st.Skipped += matched + 1
			matched = 0
		}
		if matched < len(want) {
			continue
		}
		matched = 0
		answerBy = time.Time{}
		if want == goMarker {
			if !stop() {
				return nil, st, fmt.Errorf("%w: %w", ErrHandshake, ctx.Err())
			}
			_ = conn.SetDeadline(time.Time{})
			return r, st, nil
		}
		if readyOnly {
			if !stop() {
				return nil, st, fmt.Errorf("%w: %w", ErrHandshake, ctx.Err())
			}
			_ = conn.SetDeadline(time.Time{})
			return r, st, nil
		}
		if err := write([]byte(helloMarker)); err != nil {
			return nil, st, fmt.Errorf("%w: write hello: %w", ErrHandshake, err)
		}
		st.Hellos++
		want = goMarker
		next = time.Now().Add(goWait)
	}
}
