package transport

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
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
	// After EOF number k (0-based) in a row the pause is 2 ms << k, capped.
	wantMin := []time.Duration{2, 4, 8, 16, 30, 30, 30}
	// A timer never fires early, so the minimums must hold on every try.
	// The "a few ms" bounds (where a missing reset gives >= 30 ms) can be
	// missed when a loaded machine wakes the pump late, so three tries get
	// to meet them.
	var late []string
	for try := 1; try <= 3; try++ {
		gaps := pumpGaps(t)
		for i, w := range wantMin {
			if gaps[i] < w*time.Millisecond {
				t.Errorf("pause after EOF %d: %v, want at least %v ms", i+1, gaps[i], w)
			}
		}
		if t.Failed() {
			return
		}
		late = late[:0]
		if g := gaps[0]; g > 20*time.Millisecond {
			late = append(late, fmt.Sprintf("first pause after the port went quiet: %v, want a few ms", g))
		}
		if g := gaps[8]; g > 20*time.Millisecond {
			late = append(late, fmt.Sprintf("pause after data then EOF: %v, want the back-off reset to a few ms", g))
		}
		if len(late) == 0 {
			return
		}
		t.Logf("try %d: %s", try, strings.Join(late, "; "))
	}
	t.Fatal(strings.Join(late, "; "))
}

// pumpGaps runs a pump over reads 0-6: EOF, 7: data, 8-9: EOF, 10: data
// and returns the pauses between consecutive reads.
func pumpGaps(t *testing.T) []time.Duration {
	t.Helper()
	eof := map[int]bool{}
	for i := 0; i < 7; i++ {
		eof[i] = true
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
	gaps := make([]time.Duration, len(r.times)-1)
	for i := range gaps {
		gaps[i] = r.times[i+1].Sub(r.times[i])
	}
	return gaps
}
