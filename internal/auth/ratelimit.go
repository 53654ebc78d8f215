package auth

import (
	"errors"
	"math"
	"sync"
	"time"
)

// Limit is a token bucket's shape: Rate tokens per second refill a bucket
// of Burst tokens; each request takes one.
type Limit struct {
	Rate  float64
	Burst int
}

func (l Limit) valid() bool { return l.Rate > 0 && l.Burst >= 1 && !math.IsInf(l.Rate, 0) }

// Decision is the outcome of one Allow.
type Decision struct {
	Allowed bool
	// RetryAfter is how long until one token is back (0 when allowed).
	RetryAfter time.Duration
	// Remaining is the whole tokens left after this request.
	Remaining int
	Limit     Limit
}

// RetryAfterSeconds is the Retry-After header value for d: whole seconds,
// rounded up, at least 1.
func RetryAfterSeconds(d time.Duration) int {
	s := int(math.Ceil(d.Seconds()))
	return max(s, 1)
}

// Limiter keeps one token bucket per key, in memory. It is safe for
// concurrent use. Buckets that have refilled completely are forgotten
// (that loses nothing: a full bucket and a new one are the same), so
// memory stays proportional to the keys active recently.
type Limiter struct {
	def Limit
	now func() time.Time

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
	limit  Limit
}

// LimiterOption configures NewLimiter.
type LimiterOption func(*Limiter)

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) LimiterOption { return func(l *Limiter) { l.now = now } }

// epsilon absorbs float rounding in refills, so that waiting exactly
// RetryAfter always earns the token.
const epsilon = 1e-9

// sweepEvery is how often Allow looks for full buckets to forget.
const sweepEvery = time.Minute

// NewLimiter returns a limiter whose keys get def unless Allow says
// otherwise.
func NewLimiter(def Limit, opts ...LimiterOption) (*Limiter, error) {
	if !def.valid() {
		return nil, errors.New("rate limit: rate must be > 0 and burst >= 1")
	}
	l := &Limiter{def: def, now: time.Now, buckets: make(map[string]*bucket)}
	for _, o := range opts {
		o(l)
	}
	l.lastSweep = l.now()
	return l, nil
}

// Allow takes one token from key's bucket. lim is the key's own limit;
// a zero (or invalid) Limit means the default. A changed limit applies
// from this call on (tokens are capped to the new burst).
func (l *Limiter) Allow(key string, lim Limit) Decision {
	if !lim.valid() {
		lim = l.def
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) >= sweepEvery {
		l.sweep(now)
	}
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: float64(lim.Burst), last: now, limit: lim}
		l.buckets[key] = b
	}
	b.refill(now, lim)
	if b.tokens >= 1-epsilon {
		b.tokens = max(b.tokens-1, 0)
		return Decision{Allowed: true, Remaining: int(b.tokens + epsilon), Limit: lim}
	}
	wait := time.Duration(math.Ceil((1 - b.tokens) / lim.Rate * float64(time.Second)))
	return Decision{Allowed: false, RetryAfter: wait, Limit: lim}
}

func (b *bucket) refill(now time.Time, lim Limit) {
	if el := now.Sub(b.last); el > 0 {
		b.tokens += el.Seconds() * lim.Rate
		b.last = now
	}
	b.limit = lim
	b.tokens = min(b.tokens, float64(lim.Burst))
}

func (l *Limiter) sweep(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+now.Sub(b.last).Seconds()*b.limit.Rate >= float64(b.limit.Burst) {
			delete(l.buckets, k)
		}
	}
	l.lastSweep = now
}

// Len is the number of buckets held (for tests and metrics).
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
