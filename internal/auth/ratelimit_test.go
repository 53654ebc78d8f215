package auth_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/auth"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newLimiter(t *testing.T, def auth.Limit) (*auth.Limiter, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l, err := auth.NewLimiter(def, auth.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	return l, clk
}

func TestLimiterSequences(t *testing.T) {
	type step struct {
		advance time.Duration
		allowed bool
		retry   time.Duration // when denied
	}
	ok := func(adv time.Duration) step { return step{advance: adv, allowed: true} }
	no := func(adv, retry time.Duration) step { return step{advance: adv, retry: retry} }
	ms := time.Millisecond
	tests := []struct {
		name  string
		limit auth.Limit
		steps []step
	}{
		{"burst then refill", auth.Limit{Rate: 1, Burst: 3}, []step{
			ok(0), ok(0), ok(0), no(0, time.Second), no(500*ms, 500*ms), ok(500 * ms), no(0, time.Second),
		}},
		{"fast rate, burst 1", auth.Limit{Rate: 10, Burst: 1}, []step{
			ok(0), no(0, 100*ms), no(50*ms, 50*ms), ok(50 * ms), no(0, 100*ms),
		}},
		{"slow rate", auth.Limit{Rate: 0.5, Burst: 2}, []step{
			ok(0), ok(0), no(0, 2*time.Second), no(1500*ms, 500*ms), ok(500 * ms),
		}},
		{"idle refills only to burst", auth.Limit{Rate: 100, Burst: 2}, []step{
			ok(0), ok(0), no(0, 10*ms), ok(time.Hour), ok(0), no(0, 10*ms),
		}},
		{"waiting exactly Retry-After always works", auth.Limit{Rate: 3, Burst: 1}, []step{
			ok(0), no(0, 333333334), ok(333333334), no(0, 333333334), ok(333333334), no(0, 333333334), ok(333333334),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, clk := newLimiter(t, auth.Limit{Rate: 1000, Burst: 1000})
			for i, s := range tt.steps {
				clk.Advance(s.advance)
				d := l.Allow("k", tt.limit)
				if d.Allowed != s.allowed {
					t.Fatalf("step %d: allowed = %v, want %v (%+v)", i, d.Allowed, s.allowed, d)
				}
				if !s.allowed && d.RetryAfter != s.retry {
					t.Fatalf("step %d: retry after %v, want %v", i, d.RetryAfter, s.retry)
				}
				if s.allowed && d.RetryAfter != 0 {
					t.Fatalf("step %d: allowed with retry %v", i, d.RetryAfter)
				}
				if d.Limit != tt.limit {
					t.Fatalf("step %d: limit %+v", i, d.Limit)
				}
			}
		})
	}
}

func TestLimiterRemaining(t *testing.T) {
	l, _ := newLimiter(t, auth.Limit{Rate: 1, Burst: 3})
	for i, want := range []int{2, 1, 0} {
		if d := l.Allow("k", auth.Limit{}); !d.Allowed || d.Remaining != want {
			t.Errorf("call %d: %+v, want remaining %d", i, d, want)
		}
	}
}

func TestLimiterKeysAndLimits(t *testing.T) {
	l, clk := newLimiter(t, auth.Limit{Rate: 1, Burst: 2})
	// Zero limit = default; keys are independent.
	for _, k := range []string{"a", "b"} {
		for i := 0; i < 2; i++ {
			if !l.Allow(k, auth.Limit{}).Allowed {
				t.Fatalf("%s call %d denied", k, i)
			}
		}
		if l.Allow(k, auth.Limit{}).Allowed {
			t.Fatalf("%s: third call allowed with burst 2", k)
		}
	}
	// A key's own limit replaces the default; invalid ones fall back.
	if !l.Allow("c", auth.Limit{Rate: 1, Burst: 5}).Allowed {
		t.Fatal("c denied")
	}
	if d := l.Allow("d", auth.Limit{Rate: -1, Burst: 5}); d.Limit != (auth.Limit{Rate: 1, Burst: 2}) {
		t.Errorf("invalid limit not replaced by default: %+v", d.Limit)
	}
	// Lowering a key's burst caps its tokens at once.
	clk.Advance(time.Hour)
	l.Allow("c", auth.Limit{Rate: 1, Burst: 5})
	if d := l.Allow("c", auth.Limit{Rate: 1, Burst: 1}); !d.Allowed || d.Remaining != 0 {
		t.Errorf("after lowering burst: %+v", d)
	}
	if l.Allow("c", auth.Limit{Rate: 1, Burst: 1}).Allowed {
		t.Error("tokens above the new burst kept")
	}
}

func TestNewLimiterRejectsBadDefault(t *testing.T) {
	for _, lim := range []auth.Limit{{}, {Rate: 1}, {Burst: 1}, {Rate: -1, Burst: 1}} {
		if _, err := auth.NewLimiter(lim); err == nil {
			t.Errorf("NewLimiter(%+v) accepted", lim)
		}
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want int
	}{
		{0, 1}, {time.Nanosecond, 1}, {999 * time.Millisecond, 1}, {time.Second, 1},
		{time.Second + time.Millisecond, 2}, {2500 * time.Millisecond, 3}, {time.Minute, 60},
	}
	for _, tt := range tests {
		if got := auth.RetryAfterSeconds(tt.in); got != tt.want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestLimiterForgetsFullBuckets(t *testing.T) {
	l, clk := newLimiter(t, auth.Limit{Rate: 1, Burst: 10})
	slow := auth.Limit{Rate: 0.01, Burst: 10}
	for i := 0; i < 100; i++ {
		l.Allow(fmt.Sprint("idle-", i), auth.Limit{}) // full again after 1s
	}
	for i := 0; i < 10; i++ {
		l.Allow("slow", slow) // drained; 0.6 tokens after a minute
	}
	if l.Len() != 101 {
		t.Fatalf("len = %d", l.Len())
	}
	clk.Advance(time.Minute)
	l.Allow("trigger", auth.Limit{}) // sweeps first
	if n := l.Len(); n != 2 {
		t.Errorf("after sweep len = %d, want 2 (slow, trigger)", n)
	}
	// The partly refilled bucket kept its state...
	if d := l.Allow("slow", slow); d.Allowed || d.RetryAfter != 40*time.Second {
		t.Errorf("slow after sweep: %+v, want denied for 40s", d)
	}
	// ...and forgetting the full ones lost nothing: they start full.
	for i := 0; i < 10; i++ {
		if !l.Allow("idle-1", auth.Limit{}).Allowed {
			t.Fatalf("forgotten key denied on call %d", i)
		}
	}
}

// TestLimiterConcurrent: many goroutines on one key at a frozen clock get
// exactly Burst tokens between them; with -race this also checks the
// locking.
func TestLimiterConcurrent(t *testing.T) {
	l, clk := newLimiter(t, auth.Limit{Rate: 1, Burst: 500})
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if l.Allow("shared", auth.Limit{}).Allowed {
					allowed.Add(1)
				}
				l.Allow(fmt.Sprint("own-", g), auth.Limit{Rate: 5, Burst: 5})
			}
		}()
	}
	wg.Wait()
	if got := allowed.Load(); got != 500 {
		t.Errorf("allowed %d of 6400, want exactly 500", got)
	}
	clk.Advance(10 * time.Second)
	if d := l.Allow("shared", auth.Limit{}); !d.Allowed || d.Remaining != 9 {
		t.Errorf("after 10s refill: %+v", d)
	}
}
