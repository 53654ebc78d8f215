package transport

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
)

// TestSerialReadyAnswersInput: in handshake mode the guest answers any
// input at once with READY instead of leaving the host to wait for the
// next 100 ms tick (after a restore the host's first bytes are a break),
// and without input it still writes READY only once per tick.
func TestSerialReadyAnswersInput(t *testing.T) {
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
	// Idle: one READY per tick, no more.
	before := bytes.Count(col.bytes(), markReady)
	time.Sleep(350 * time.Millisecond)
	if n := bytes.Count(col.bytes(), markReady) - before; n < 2 || n > 5 {
		t.Fatalf("guest wrote %d READY lines in 350 ms without input, want about 3", n)
	}
	for i := 0; i < 5; i++ {
		// Right after a tick's READY the next tick is ~100 ms away.
		if err := col.waitFor(markReady, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if _, err := host.Write(bytes.Repeat([]byte{0xFF}, 12)); err != nil {
			t.Fatal(err)
		}
		if err := col.waitFor(markReady, 5*time.Second); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 50*time.Millisecond {
			t.Errorf("READY came %v after the break, want at once (the tick is 100 ms)", d)
		}
	}
	if _, err := host.Write(markHello); err != nil {
		t.Fatal(err)
	}
	if err := col.waitFor(markGo, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	sess, err := yamux.Client(&readerConn{Conn: host, r: col}, HostYamuxConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	roundTrip(t, l, sess)
}

// timedReader returns EOF for the reads listed in eof (by index) and one
// byte otherwise, recording when each read happened; after max reads it
// blocks until closed.
type timedReader struct {
	mu    sync.Mutex
	eof   map[int]bool
	max   int
	times []time.Time
	done  chan struct{}
}

func (r *timedReader) Read(b []byte) (int, error) {
	r.mu.Lock()
	i := len(r.times)
	if i >= r.max {
		r.mu.Unlock()
		<-r.done
		return 0, io.EOF
	}
	r.times = append(r.times, time.Now())
	r.mu.Unlock()
	if r.eof[i] {
		return 0, io.EOF
	}
	b[0] = 'x'
	return 1, nil
}

// TestPumpEOFBackoffGrows: after the port goes quiet the guest polls again
// within a few milliseconds and backs off towards 30 ms only while EOFs
// continue; data resets the back-off.
func TestPumpEOFBackoffGrows(t *testing.T) {
	eof := map[int]bool{}
	for i := 0; i < 7; i++ {
		eof[i] = true // reads 0-6: EOF; 7: data; 8-9: EOF
	}
	eof[8], eof[9] = true, true
	r := &timedReader{eof: eof, max: 11, done: make(chan struct{})}
	done := make(chan struct{})
	p := newPump(r, discardLog(), done)
	go p.run()
	go func() { _ = p.discardUntil([]byte("never"), done) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		n := len(r.times)
		r.mu.Unlock()
		if n == r.max || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(done)
	close(r.done)
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.times) != r.max {
		t.Fatalf("%d reads in 5 s", len(r.times))
	}
	gap := func(i int) time.Duration { return r.times[i+1].Sub(r.times[i]) }
	// After EOF number k (0-based) in a row the pause is 2 ms << k, capped.
	wantMin := []time.Duration{2, 4, 8, 16, 30, 30, 30}
	for i, w := range wantMin {
		if g := gap(i); g < w*time.Millisecond {
			t.Errorf("pause after EOF %d: %v, want at least %v ms", i+1, g, w)
		}
	}
	if g := gap(0); g > 20*time.Millisecond {
		t.Errorf("first pause after the port went quiet: %v, want a few ms", g)
	}
	if g := gap(8); g > 20*time.Millisecond {
		t.Errorf("pause after data then EOF: %v, want the back-off reset to a few ms", g)
	}
}
