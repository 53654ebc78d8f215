package transport

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

func TestSerialHTTP(t *testing.T) {
	log, _ := testLog(t)
	port := newFakePort()
	chardev := startFakeChardev(t, port)
	l := newTestListener(t, port, testConfig(log))
	serveHTTP(t, l)

	c := httpClient(dialHost(t, chardev.dial(t)))
	if got, err := get(c, "/hello"); err != nil || got != "hello" {
		t.Fatalf("GET /hello = %q, %v", got, err)
	}
	if err := echo(c, randBytes(3<<20)); err != nil {
		t.Fatal(err)
	}
	if got, err := get(c, "/bytes?n=5000000"); err != nil || len(got) != 5000000 {
		t.Fatalf("GET /bytes = %d bytes, %v", len(got), err)
	}
	if l.Addr().Network() != "virtio-serial" || l.Addr().String() != "test" {
		t.Fatalf("Addr = %v", l.Addr())
	}
}

func TestSerialConcurrentStreams(t *testing.T) {
	log, _ := testLog(t)
	port := newFakePort()
	chardev := startFakeChardev(t, port)
	l := newTestListener(t, port, testConfig(log))
	serveHTTP(t, l)
	c := httpClient(dialHost(t, chardev.dial(t)))

	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := echo(c, randBytes(16<<10+i*509)); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// roundTrip opens a raw stream on sess, accepts it on l and checks bytes
// go both ways. It returns the guest side of the stream.
func roundTrip(t *testing.T, l net.Listener, sess *yamux.Session) (host, guest net.Conn) {
	t.Helper()
	hs, err := sess.Open()
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	if _, err := hs.Write([]byte("ping")); err != nil {
		t.Fatalf("host write: %v", err)
	}
	gs, err := l.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(gs, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("guest read %q, %v", buf, err)
	}
	if _, err := gs.Write([]byte("pong")); err != nil {
		t.Fatalf("guest write: %v", err)
	}
	if _, err := io.ReadFull(hs, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("host read %q, %v", buf, err)
	}
	return hs, gs
}

// readFails waits for a read on c to fail (the stream's session died).
func readFails(t *testing.T, c net.Conn) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		errc <- err
	}()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("read on a stream of a dead session succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("read on a stream of a dead session did not fail")
	}
}

func TestSerialHostReconnect(t *testing.T) {
	log, _ := testLog(t)
	port := newFakePort()
	chardev := startFakeChardev(t, port)
	l := newTestListener(t, port, testConfig(log))

	sess1 := dialHost(t, chardev.dial(t))
	_, guest1 := roundTrip(t, l, sess1)

	// The host agent goes away: the guest reads EOF and goes back to
	// READY; the stream of the old session fails.
	sess1.Close()
	readFails(t, guest1)

	// A new client with no memory of the old session.
	for i := range 3 {
		sess := dialHost(t, chardev.dial(t))
		roundTrip(t, l, sess)
		sess.Close()
		if i == 0 {
			// The port's EOF handling must not spin: the guest keeps
			// working after sitting disconnected for a while.
			time.Sleep(200 * time.Millisecond)
		}
	}
}

func TestSerialSnapshotRestoreRecoversThroughBreak(t *testing.T) {
	log, rec := testLog(t)
	port := newFakePort()
	chardev := startFakeChardev(t, port)
	l := newTestListener(t, port, testConfig(log))
	serveHTTP(t, l)

	sess1 := dialHost(t, chardev.dial(t))
	c1 := httpClient(sess1)
	if _, err := get(c1, "/hello"); err != nil {
		t.Fatal(err)
	}
	// Restore: the guest still holds its session from before the
	// snapshot; the host is a fresh process on a fresh connection, and the
	// guest never sees a disconnect.
	guestEnd, hostEnd := net.Pipe()
	port.swap(guestEnd)
	sess1.Close()

	// Only the break can end the guest's old session quickly: its
	// keepalive is 5 minutes, and this dial gives up after 20 s.
	start := time.Now()
	sess2 := dialHost(t, hostEnd)
	t.Logf("recovered after %v", time.Since(start))
	if got, err := get(httpClient(sess2), "/hello"); err != nil || got != "hello" {
		t.Fatalf("GET /hello after restore = %q, %v", got, err)
	}
	if !rec.contains("Invalid protocol version: 255") {
		t.Fatal("the guest did not see the break as a yamux protocol error")
	}
	if err := echo(httpClient(sess2), randBytes(1<<20)); err != nil {
		t.Fatal(err)
	}
}

func TestSerialGuestIgnoresGarbageBeforeHello(t *testing.T) {
	log, _ := testLog(t)
	port := newFakePort()
	l := newTestListener(t, port, testConfig(log))
	guestEnd, host := net.Pipe()
	defer host.Close()
	port.attach(guestEnd)
	col := newCollector(host)

	if err := col.waitFor(markReady, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	// Garbage: breaks, near-misses of HELLO, an old yamux header.
	noise := [][]byte{
		bytes.Repeat([]byte{0xFF}, 12),
		[]byte("WRENN-HELL\n"),
		[]byte("WRENN-HELLO"), // no newline
		[]byte("\x00\x02\x00\x01\x00\x00\x00\x00\x00\x00\x00\x07"),
		[]byte("WRENN-WRENN-HEL"),
	}
	for _, b := range noise {
		if _, err := host.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	// Still in handshake mode: READY keeps coming, GO does not.
	time.Sleep(350 * time.Millisecond)
	early := col.bytes()
	if bytes.Contains(early, markGo) {
		t.Fatalf("guest sent GO after garbage only: %q", early)
	}
	if n := bytes.Count(early, markReady); n < 3 {
		t.Fatalf("guest sent %d READY lines in 350 ms, want one each 100 ms", n)
	}
	// "WRENN-HEL" above is completed by this "LO\n": the pattern may span
	// writes. Then the session starts.
	if _, err := host.Write([]byte("LO\n")); err != nil {
		t.Fatal(err)
	}
	if err := col.waitFor(markGo, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	before, _, _ := bytes.Cut(col.bytes(), markGo)
	if rest := bytes.ReplaceAll(before, markReady, nil); len(rest) != 0 {
		t.Fatalf("guest wrote %q besides READY before GO", rest)
	}
	sess, err := yamux.Client(&readerConn{Conn: host, r: col}, HostYamuxConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	roundTrip(t, l, sess)
}

// collector reads a connection continuously into memory (so the writer
// never blocks) and lets a test wait for patterns and then read on.
type collector struct {
	mu   sync.Mutex
	cond *sync.Cond
	buf  []byte
	off  int // read position for Read and waitFor
	err  error
}

func newCollector(c net.Conn) *collector {
	col := &collector{}
	col.cond = sync.NewCond(&col.mu)
	go func() {
		b := make([]byte, 32<<10)
		for {
			n, err := c.Read(b)
			col.mu.Lock()
			col.buf = append(col.buf, b[:n]...)
			col.err = err
			col.cond.Broadcast()
			col.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return col
}

func (c *collector) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf)
}

// waitFor advances the read position past the next pat.
func (c *collector) waitFor(pat []byte, timeout time.Duration) error {
	timer := time.AfterFunc(timeout, func() {
		c.mu.Lock()
		c.err = fmt.Errorf("timed out waiting for %q", pat)
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if i := bytes.Index(c.buf[c.off:], pat); i >= 0 {
			c.off += i + len(pat)
			return nil
		}
		if c.err != nil {
			return c.err
		}
		c.cond.Wait()
	}
}

func (c *collector) Read(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.off == len(c.buf) && c.err == nil {
		c.cond.Wait()
	}
	if c.off == len(c.buf) {
		return 0, c.err
	}
	n := copy(b, c.buf[c.off:])
	c.off += n
	return n, nil
}

func TestSerialListenerClose(t *testing.T) {
	log, _ := testLog(t)
	port := newFakePort()
	chardev := startFakeChardev(t, port)
	ctx, cancel := context.WithCancel(context.Background())
	l := newSerialListener(ctx, log, port, SerialAddr{Name: "x"}, testConfig(log))
	sess := dialHost(t, chardev.dial(t))
	_, guest := roundTrip(t, l, sess)

	acceptErr := make(chan error, 1)
	go func() { _, err := l.Accept(); acceptErr <- err }()
	cancel() // ctx ends: the listener closes itself
	select {
	case err := <-acceptErr:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after close = %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Accept did not return after the context ended")
	}
	readFails(t, guest)
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestDialSerialHostHandshake(t *testing.T) {
	guest, host := net.Pipe()
	defer guest.Close()
	type result struct {
		sess *yamux.Session
		err  error
	}
	res := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		s, err := DialSerialHost(ctx, host)
		res <- result{s, err}
	}()
	read := func(n int) []byte {
		t.Helper()
		b := make([]byte, n)
		guest.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(guest, b); err != nil {
			t.Fatalf("scripted guest read: %v", err)
		}
		return b
	}
	// Old-session noise and a near-miss of READY, then silence: the host
	// must send a break.
	if _, err := guest.Write([]byte("\x00\x02\x00\x01\x00\x00\x00\x00\x00\x00\x00\x07WRENN-REA")); err != nil {
		t.Fatal(err)
	}
	if b := read(12); !bytes.Equal(b, bytes.Repeat([]byte{0xFF}, 12)) {
		t.Fatalf("host sent %x, want a 12-byte 0xFF break", b)
	}
	if _, err := guest.Write([]byte("junkWRENN-READY\n")); err != nil {
		t.Fatal(err)
	}
	// More breaks may be in flight; HELLO must follow them.
	var got []byte
	for !bytes.HasSuffix(got, markHello) {
		got = append(got, read(1)...)
	}
	if rest := bytes.Trim(bytes.TrimSuffix(got, markHello), "\xff"); len(rest) != 0 {
		t.Fatalf("host sent %q before HELLO besides breaks", rest)
	}
	// Late READY lines, then GO and a yamux ping in the same write: the
	// host must hand the bytes after GO to yamux, which answers the ping.
	ping := []byte{0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 42} // v0, ping, SYN, stream 0, opaque 42
	if _, err := guest.Write(append([]byte("WRENN-READY\nWRENN-GO\n"), ping...)); err != nil {
		t.Fatal(err)
	}
	// The host answers our ping and sends its own first ping; answer it.
	gotAck := false
	for range 2 {
		h := read(12)
		switch {
		case bytes.Equal(h, []byte{0, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 42}):
			gotAck = true
		case h[0] == 0 && h[1] == 2 && h[3] == 1: // ping SYN
			ack := bytes.Clone(h)
			ack[3] = 2
			if _, err := guest.Write(ack); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected frame from host %x", h)
		}
	}
	if !gotAck {
		t.Fatal("host did not answer the ping sent right after GO")
	}
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	r.sess.Close()
}

func TestDialSerialHostContext(t *testing.T) {
	guest, host := net.Pipe()
	defer guest.Close()
	defer host.Close()
	var breaks bytes.Buffer
	go io.Copy(&breaks, guest)
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := DialSerialHost(ctx, host)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("DialSerialHost on a silent guest = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("DialSerialHost returned %v after its context ended", d)
	}

	// Cancellation while waiting for GO (after READY).
	guest2, host2 := net.Pipe()
	defer guest2.Close()
	go func() {
		guest2.Write([]byte("WRENN-READY\n"))
		io.Copy(io.Discard, guest2)
	}()
	ctx2, cancel2 := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel2)
	if _, err := DialSerialHost(ctx2, host2); !errors.Is(err, context.Canceled) {
		t.Fatalf("DialSerialHost cancelled while waiting for GO = %v, want Canceled", err)
	}
}

func BenchmarkSerialStream(b *testing.B) {
	for _, dir := range []string{"host-to-guest", "guest-to-host"} {
		b.Run(dir, func(b *testing.B) {
			guestFile, hostConn := socketPair(b)
			l := newSerialListener(context.Background(), discardLog(), guestFile, SerialAddr{Name: "bench"}, yamuxConfig(discardLog()))
			defer l.Close()
			sess := dialHost(b, hostConn)
			hs, err := sess.Open()
			if err != nil {
				b.Fatal(err)
			}
			hs.Write([]byte{1})
			gs, err := l.Accept()
			if err != nil {
				b.Fatal(err)
			}
			io.ReadFull(gs, make([]byte, 1))
			src, dst := net.Conn(hs), gs
			if dir == "guest-to-host" {
				src, dst = gs, hs
			}
			const chunk = 1 << 20
			buf := make([]byte, chunk)
			b.SetBytes(chunk)
			b.ResetTimer()
			done := make(chan error, 1)
			go func() {
				_, err := io.CopyN(io.Discard, dst, int64(b.N)*chunk)
				done <- err
			}()
			for range b.N {
				if _, err := src.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}

func BenchmarkSerialHTTPDownload(b *testing.B) {
	guestFile, hostConn := socketPair(b)
	l := newSerialListener(context.Background(), discardLog(), guestFile, SerialAddr{Name: "bench"}, yamuxConfig(discardLog()))
	serveHTTP(b, l)
	c := httpClient(dialHost(b, hostConn))
	const size = 8 << 20
	b.SetBytes(size)
	for b.Loop() {
		if got, err := get(c, fmt.Sprintf("/bytes?n=%d", size)); err != nil || len(got) != size {
			b.Fatalf("download: %d bytes, %v", len(got), err)
		}
	}
}

// A GO that is not followed by a yamux session (the guest went back to
// READY: a stale GO from an interrupted handshake) must not be handed out
// as a working session.
func TestDialSerialHostRejectsDeadSession(t *testing.T) {
	guest, host := net.Pipe()
	defer guest.Close()
	go func() {
		m := newMatcher(markHello)
		b := make([]byte, 64)
		guest.Write(markReady)
		for {
			n, err := guest.Read(b)
			if err != nil {
				return
			}
			if m.feed(b[:n]) >= 0 {
				break
			}
		}
		guest.Write([]byte("WRENN-GO\nWRENN-READY\n"))
		io.Copy(io.Discard, guest)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := DialSerialHost(ctx, host)
	if err == nil {
		sess.Close()
		t.Fatal("DialSerialHost returned a session the guest is not in")
	}
	if ctx.Err() != nil {
		t.Fatalf("failure was only noticed at the context deadline: %v", err)
	}
	t.Logf("rejected: %v", err)
}

// BenchmarkSocketpairBaseline is the raw socketpair the serial benchmarks
// run over, for comparison.
func BenchmarkSocketpairBaseline(b *testing.B) {
	f, c := socketPair(b)
	defer f.Close()
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	b.SetBytes(chunk)
	done := make(chan error, 1)
	go func() {
		_, err := io.CopyN(io.Discard, c, int64(b.N)*chunk)
		done <- err
	}()
	for range b.N {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
