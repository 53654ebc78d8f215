package transport

import "time"

// Handshake markers; see the package documentation.
var (
	markReady = []byte("WRENN-READY\n")
	markHello = []byte("WRENN-HELLO\n")
	markGo    = []byte("WRENN-GO\n")
)

const (
	// readyInterval is how often the guest repeats READY.
	readyInterval = 100 * time.Millisecond
	// eofBackoff caps the pause after a read returned EOF (no host
	// client), so a disconnected port is not polled in a busy loop. The
	// pause starts at eofBackoffMin and doubles with each EOF in a row, so
	// a host that connects right after the port went quiet (a restored
	// guest: its host connection was cut by the snapshot) is heard within
	// a few milliseconds, not up to 30.
	eofBackoff    = 30 * time.Millisecond
	eofBackoffMin = 2 * time.Millisecond
	// errBackoff is the pause after any other read error.
	errBackoff = time.Second
)

// matcher finds a byte pattern in a stream fed in pieces (Knuth-Morris-
// Pratt, so a partial match split across reads or followed by a false
// start is handled).
type matcher struct {
	pat  []byte
	fail []int
	n    int // bytes of pat matched so far
}

func newMatcher(pat []byte) *matcher {
	fail := make([]int, len(pat))
	for i, k := 1, 0; i < len(pat); i++ {
		for k > 0 && pat[i] != pat[k] {
			k = fail[k-1]
		}
		if pat[i] == pat[k] {
			k++
		}
		fail[i] = k
	}
	return &matcher{pat: pat, fail: fail}
}

// feed consumes b and returns the index in b just past the first complete
// match, or -1 when b completes none (the partial state is kept).
func (m *matcher) feed(b []byte) int {
	for i, c := range b {
		for m.n > 0 && c != m.pat[m.n] {
			m.n = m.fail[m.n-1]
		}
		if c == m.pat[m.n] {
			m.n++
		}
		if m.n == len(m.pat) {
			m.n = 0
			return i + 1
		}
	}
	return -1
}
