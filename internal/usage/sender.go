// Package usage delivers usage events from the store's outbox to Lago
// (POST /api/v1/events/batch). Events are written to the outbox in the
// same transaction as the state change they bill (see
// store.SetUsageEvents); the sender claims due events with a lease (so
// several control planes may run it), posts them in batches, and marks
// them sent, or failed with a backoff that grows with each attempt.
// Nothing is lost while Lago is down. A batch Lago refuses (it validates
// batches as a whole, and refuses a transaction_id it already has, as
// after a delivery whose answer was lost) is retried event by event, and an
// event Lago already has counts as delivered, so a redelivery never bills
// twice and never blocks the events batched with it.
package usage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

// Config configures a Sender; zero values take the defaults.
type Config struct {
	URL    string // Lago's base URL, e.g. http://lago:3000 (required)
	APIKey string // Lago API key (Bearer)

	Interval  time.Duration // between polls of the outbox when idle (default 5 s)
	Batch     int           // events per request (default 100)
	Timeout   time.Duration // one request (default 15 s)
	Lease     time.Duration // how long a claimed batch is hidden from other senders (default 1 min)
	RetryBase time.Duration // first retry delay; doubles per attempt up to RetryMax (default 5 s)
	RetryMax  time.Duration // default 10 min; also the delay after Lago refuses events as invalid
	Client    *http.Client  // default: a client with Timeout
}

func (c *Config) defaults() {
	if c.Interval <= 0 {
		c.Interval = 5 * time.Second
	}
	if c.Batch <= 0 {
		c.Batch = 100
	}
	if c.Timeout <= 0 {
		c.Timeout = 15 * time.Second
	}
	if c.Lease <= 0 {
		c.Lease = time.Minute
	}
	if c.RetryBase <= 0 {
		c.RetryBase = 5 * time.Second
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 10 * time.Minute
	}
	if c.Client == nil {
		c.Client = &http.Client{Timeout: c.Timeout}
	}
}

// Sender delivers the outbox. Use New.
type Sender struct {
	st       *store.Store
	cfg      Config
	batchURL string // POST /api/v1/events/batch
	eventURL string // POST /api/v1/events
	log      *slog.Logger

	sent, failed atomic.Uint64
}

// New checks cfg and returns a sender; Run starts it.
func New(st *store.Store, cfg Config, log *slog.Logger) (*Sender, error) {
	cfg.defaults()
	u, err := url.Parse(strings.TrimRight(cfg.URL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("lago url %q: want http(s)://host[:port]", cfg.URL)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Sender{st: st, cfg: cfg, batchURL: u.String() + "/api/v1/events/batch", eventURL: u.String() + "/api/v1/events",
		log: log.With("component", "usage")}, nil
}

// keepSent is how long delivered events stay in the outbox (for audit)
// before Run deletes them.
const keepSent = 7 * 24 * time.Hour

// Run delivers until ctx ends: a full batch is followed at once by the
// next, otherwise the sender waits Interval. Once an hour it deletes
// events delivered more than a week ago.
func (s *Sender) Run(ctx context.Context) {
	var purged time.Time
	for {
		if time.Since(purged) > time.Hour {
			purged = time.Now()
			if n, err := s.st.PurgeSentOutbox(ctx, keepSent); err != nil && ctx.Err() == nil {
				s.log.Warn("purge delivered usage events", "err", err)
			} else if n > 0 {
				s.log.Info("purged delivered usage events", "count", n)
			}
		}
		n, err := s.Flush(ctx)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("usage delivery", "err", err)
		}
		if n == s.cfg.Batch && err == nil {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.cfg.Interval):
		}
	}
}

// Flush claims one batch of due events and posts it; it returns how many
// were delivered. A refused or failed batch is marked failed, due again
// after a backoff.
func (s *Sender) Flush(ctx context.Context) (int, error) {
	msgs, err := s.st.ClaimOutbox(ctx, s.cfg.Batch, s.cfg.Lease)
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	events := make([]json.RawMessage, len(msgs))
	for i, m := range msgs {
		events[i] = m.Payload
	}
	perr := s.post(ctx, s.batchURL, map[string]any{"events": events})
	// Record the outcome even if ctx ended meanwhile.
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var refused *refusedError
	if perr != nil && len(msgs) > 1 && errors.As(perr, &refused) {
		// Lago validates a batch as a whole: one event it refuses (often
		// one it already has, from a batch whose answer was lost) sinks
		// the rest. Send them one by one so each gets its own verdict.
		return s.oneByOne(ctx, mctx, msgs)
	}
	if perr != nil {
		s.failed.Add(uint64(len(msgs)))
		var errs []error
		for _, m := range msgs {
			if err := s.st.MarkOutboxFailed(mctx, m.ID, truncate(perr.Error(), 500), s.retryAfter(perr, m.Attempts)); err != nil {
				errs = append(errs, err)
			}
		}
		return 0, errors.Join(append([]error{perr}, errs...)...)
	}
	var errs []error
	for _, m := range msgs {
		if err := s.st.MarkOutboxSent(mctx, m.ID); err != nil {
			errs = append(errs, err)
		}
	}
	s.sent.Add(uint64(len(msgs)))
	return len(msgs), errors.Join(errs...)
}

// oneByOne posts each event on its own (POST /api/v1/events). An event
// Lago already has (422 value_already_exist on its transaction_id) counts
// as delivered: that is the redelivery Lago's idempotency key is for.
func (s *Sender) oneByOne(ctx, mctx context.Context, msgs []store.OutboxMessage) (int, error) {
	n := 0
	var errs []error
	for _, m := range msgs {
		err := s.post(ctx, s.eventURL, map[string]any{"event": m.Payload})
		var refused *refusedError
		if errors.As(err, &refused) && refused.status == http.StatusUnprocessableEntity &&
			strings.Contains(refused.body, "value_already_exist") {
			err = nil
		}
		if err != nil {
			s.failed.Add(1)
			errs = append(errs, fmt.Errorf("event %s: %w", m.TransactionID, err))
			if merr := s.st.MarkOutboxFailed(mctx, m.ID, truncate(err.Error(), 500), s.retryAfter(err, m.Attempts)); merr != nil {
				errs = append(errs, merr)
			}
			continue
		}
		if merr := s.st.MarkOutboxSent(mctx, m.ID); merr != nil {
			errs = append(errs, merr)
			continue
		}
		s.sent.Add(1)
		n++
	}
	return n, errors.Join(errs...)
}

// refusedError is Lago refusing the events themselves (4xx other than
// 401/403/429): sending them again soon would be refused again.
type refusedError struct {
	status int
	body   string
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("lago refused the events: %d %s", e.status, e.body)
}

func (s *Sender) post(ctx context.Context, url string, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if s.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+s.cfg.APIKey)
	}
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return fmt.Errorf("post events to lago: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode >= 400 && resp.StatusCode < 500 &&
		resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden &&
		resp.StatusCode != http.StatusTooManyRequests:
		return &refusedError{status: resp.StatusCode, body: strings.TrimSpace(string(msg))}
	default:
		return fmt.Errorf("post events to lago: %d %s", resp.StatusCode, strings.TrimSpace(string(msg)))
	}
}

// retryAfter is RetryBase doubled per earlier attempt, at most RetryMax;
// refused events wait RetryMax.
func (s *Sender) retryAfter(err error, attempts int) time.Duration {
	var refused *refusedError
	if errors.As(err, &refused) {
		return s.cfg.RetryMax
	}
	d := s.cfg.RetryBase
	for i := 1; i < attempts && d < s.cfg.RetryMax; i++ {
		d *= 2
	}
	return min(d, s.cfg.RetryMax)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Stats are the sender's counters.
type Stats struct {
	Sent   uint64 // events Lago accepted
	Failed uint64 // event deliveries that failed (each is retried)
}

// Stats returns the counters so far.
func (s *Sender) Stats() Stats { return Stats{Sent: s.sent.Load(), Failed: s.failed.Load()} }

// Collector exports the counters and the outbox's backlog to Prometheus.
func (s *Sender) Collector() prometheus.Collector { return collector{s} }

var (
	descSent = prometheus.NewDesc("wrenn_usage_events_sent_total",
		"Usage events delivered to Lago.", nil, nil)
	descFailed = prometheus.NewDesc("wrenn_usage_delivery_failures_total",
		"Usage event deliveries that failed (each is retried with a backoff).", nil, nil)
	descPending = prometheus.NewDesc("wrenn_usage_events_pending",
		"Usage events in the outbox not delivered yet.", nil, nil)
)

type collector struct{ s *Sender }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descSent
	ch <- descFailed
	ch <- descPending
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	ch <- prometheus.MustNewConstMetric(descSent, prometheus.CounterValue, float64(st.Sent))
	ch <- prometheus.MustNewConstMetric(descFailed, prometheus.CounterValue, float64(st.Failed))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if n, err := c.s.st.OutboxPending(ctx); err == nil {
		ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(n))
	}
}
