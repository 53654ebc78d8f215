// Package process implements envd's process.Process Connect service: it
// starts processes as the requesting user (pipes or a PTY), streams their
// output to any number of followers, takes their input, resizes their
// terminal and signals them, and remembers how each one ended for a while
// so late followers still get the end event.
//
// Children are forked through the shared reaper (never os/exec). Each runs
// in its own process group (its own session with a PTY), and signals go to
// that whole group. A process outlives the request that started it: only
// SendSignal, the Start request's deadline (Connect-Timeout-Ms, the
// process lifetime) or Close end it.
//
// It imports envd's state, permissions, reaper and generated code only.
package process

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	pb "github.com/wrenn-dev/envd/internal/gen/process"
	"github.com/wrenn-dev/envd/internal/gen/process/processconnect"
	"github.com/wrenn-dev/envd/internal/reaper"
	"github.com/wrenn-dev/envd/internal/state"
)

// Retention of ended processes: a Connect by pid or tag after the end
// still gets start then end. Bounded by age and by count.
const (
	defaultRetainFor = 5 * time.Minute
	defaultRetainMax = 256
)

// defaultKeepalive is the keepalive interval when the client does not send
// Keepalive-Ping-Interval.
const defaultKeepalive = 90 * time.Second

// Service implements processconnect.ProcessHandler. It is safe for
// concurrent use.
type Service struct {
	st     *state.State
	reaper *reaper.Reaper
	log    *slog.Logger

	// Tunables, fixed after New (tests shorten them).
	slowAfter  time.Duration
	drainGrace time.Duration
	retainFor  time.Duration
	retainMax  int

	mu      sync.Mutex
	seq     uint64 // start order, to pick the newest match
	running map[int]*proc
	ended   []*proc // oldest first
	closed  bool
}

var _ processconnect.ProcessHandler = (*Service)(nil)

// New returns a Service that starts children through r, with defaults
// (environment, workdir) from st.
func New(st *state.State, r *reaper.Reaper, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{
		st:         st,
		reaper:     r,
		log:        log,
		slowAfter:  defaultSlowAfter,
		drainGrace: defaultDrainGrace,
		retainFor:  defaultRetainFor,
		retainMax:  defaultRetainMax,
		running:    map[int]*proc{},
	}
}

// Close refuses new processes and SIGKILLs the process group (and PTY
// session) of every running one. Their end events still follow.
func (s *Service) Close() {
	s.mu.Lock()
	s.closed = true
	procs := make([]*proc, 0, len(s.running))
	for _, p := range s.running {
		procs = append(procs, p)
	}
	s.mu.Unlock()
	for _, p := range procs {
		if err := p.signal(unix.SIGKILL); err != nil {
			s.log.Warn("kill at shutdown", "pid", p.pid, "err", err)
		}
	}
}

// register adds a started process to the running table. A process that
// raced with Close is killed at once (its end still follows).
func (s *Service) register(p *proc) {
	s.mu.Lock()
	s.seq++
	p.seq = s.seq
	s.running[p.pid] = p
	closed := s.closed
	s.mu.Unlock()
	if closed {
		_ = p.signal(unix.SIGKILL)
	}
}

// retire moves an ended process from the running table to the bounded
// list of ended ones.
func (s *Service) retire(p *proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running[p.pid] == p {
		delete(s.running, p.pid)
	}
	s.ended = append(s.ended, p)
	s.pruneLocked()
}

// pruneLocked forgets ended processes past their age or the count bound.
func (s *Service) pruneLocked() {
	cut := time.Now().Add(-s.retainFor)
	drop := 0
	for drop < len(s.ended) && (len(s.ended)-drop > s.retainMax || s.ended[drop].endedAt.Before(cut)) {
		drop++
	}
	if drop > 0 {
		clear(s.ended[:drop])
		s.ended = s.ended[drop:]
	}
}

// find resolves a selector. Running processes win over ended ones (a pid
// may have been reused); with several matches the newest wins. Ended
// processes are only considered when withEnded is set, otherwise selecting
// one is NotFound with a message saying it has exited.
func (s *Service) find(sel *pb.ProcessSelector, withEnded bool) (*proc, error) {
	match, desc, err := selectorMatcher(sel)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var best *proc
	for _, p := range s.running {
		if match(p) && (best == nil || p.seq > best.seq) {
			best = p
		}
	}
	if best != nil {
		return best, nil
	}
	s.pruneLocked()
	for _, p := range slices.Backward(s.ended) {
		if match(p) {
			if withEnded {
				return p, nil
			}
			return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process with %s has already exited", desc))
		}
	}
	return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("process with %s not found", desc))
}

func selectorMatcher(sel *pb.ProcessSelector) (func(*proc) bool, string, error) {
	switch v := sel.GetSelector().(type) {
	case *pb.ProcessSelector_Pid:
		if v.Pid == 0 {
			return nil, "", connect.NewError(connect.CodeInvalidArgument, errors.New("process selector pid must not be 0"))
		}
		pid := int(v.Pid)
		return func(p *proc) bool { return p.pid == pid }, "pid " + strconv.Itoa(pid), nil
	case *pb.ProcessSelector_Tag:
		if v.Tag == "" {
			return nil, "", connect.NewError(connect.CodeInvalidArgument, errors.New("process selector tag must not be empty"))
		}
		tag := v.Tag
		return func(p *proc) bool { return p.tag != nil && *p.tag == tag }, strconv.Quote(tag) + " tag", nil
	}
	return nil, "", connect.NewError(connect.CodeInvalidArgument, errors.New("process selector is required: set pid or tag"))
}

// keepaliveInterval reads Keepalive-Ping-Interval (seconds).
func keepaliveInterval(h http.Header) time.Duration {
	v := h.Get("Keepalive-Ping-Interval")
	if v == "" {
		return defaultKeepalive
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n == 0 {
		return defaultKeepalive
	}
	return time.Duration(n) * time.Second
}
