package filesystem

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"connectrpc.com/connect"

	fspb "github.com/wrenn-dev/envd/internal/gen/filesystem"
)

// maxPendingEvents bounds a polling watcher's buffer. When a client polls
// too slowly the oldest events are dropped so the newest maxPendingEvents
// remain; the drop is logged.
const maxPendingEvents = 4096

// randomID returns an unguessable identifier (26 base32 characters, 130
// bits from crypto/rand).
func randomID() string { return rand.Text() }

// pollWatcher is a watch whose events wait in a buffer for
// GetWatcherEvents.
type pollWatcher struct {
	id string
	w  *watcher

	mu      sync.Mutex
	pending []*fspb.FilesystemEvent
	dropped int
	err     error // set once the watched directory is gone

	closeOnce sync.Once
	done      chan struct{} // closed when run returns
}

// run moves events from the watcher into the buffer until the watcher is
// closed.
func (p *pollWatcher) run() {
	defer close(p.done)
	for {
		select {
		case err, ok := <-p.w.fsw.Errors:
			if !ok {
				return
			}
			p.w.log.Warn("watch error; events may have been lost", "watcher_id", p.id, "err", err)
		case ev, ok := <-p.w.fsw.Events:
			if !ok {
				return
			}
			if err := p.w.handle(ev, p.push); err != nil {
				p.mu.Lock()
				p.err = err
				p.mu.Unlock()
			}
		}
	}
}

func (p *pollWatcher) push(ev *fspb.FilesystemEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pending) >= maxPendingEvents {
		if p.dropped == 0 {
			p.w.log.Warn("watcher buffer full; dropping oldest events", "watcher_id", p.id, "limit", maxPendingEvents)
		}
		p.dropped++
		p.pending[0] = nil
		p.pending = p.pending[1:]
	}
	p.pending = append(p.pending, ev)
}

// drain returns and clears the buffered events. Once the buffer is empty
// and the watched directory is gone, it returns that error instead.
func (p *pollWatcher) drain() ([]*fspb.FilesystemEvent, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.pending
	p.pending = nil
	if p.dropped > 0 {
		p.w.log.Info("watcher dropped events since the last poll", "watcher_id", p.id, "dropped", p.dropped)
		p.dropped = 0
	}
	if len(out) == 0 && p.err != nil {
		return nil, p.err
	}
	return out, nil
}

// close stops the watcher and waits for run to return.
func (p *pollWatcher) close() {
	p.closeOnce.Do(p.w.close)
	<-p.done
}

// CreateWatcher starts a watch whose events are collected for
// GetWatcherEvents. The options and errors are those of WatchDir.
func (s *Service) CreateWatcher(ctx context.Context, req *connect.Request[fspb.CreateWatcherRequest]) (*connect.Response[fspb.CreateWatcherResponse], error) {
	m := req.Msg
	w, err := s.startWatcher(ctx, watchSpec{
		path:         m.GetPath(),
		recursive:    m.GetRecursive(),
		includeEntry: m.GetIncludeEntry(),
		allowNetwork: m.GetAllowNetworkMounts(),
	})
	if err != nil {
		return nil, err
	}
	p := &pollWatcher{id: randomID(), w: w, done: make(chan struct{})}
	p.w.log = p.w.log.With("watcher_id", p.id)

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		w.close()
		return nil, connect.NewError(connect.CodeUnavailable, errClosed)
	}
	s.watchers[p.id] = p
	s.active.Add(1)
	s.mu.Unlock()

	go func() {
		defer s.active.Done()
		p.run()
	}()
	s.log.Debug("watcher created", "watcher_id", p.id, "path", w.root, "recursive", w.recursive)
	return connect.NewResponse(&fspb.CreateWatcherResponse{WatcherId: p.id}), nil
}

var errNoWatcher = errors.New("no such watcher")

// watcherByID finds a polling watcher for an authenticated request.
func (s *Service) watcherByID(ctx context.Context, id string) (*pollWatcher, error) {
	if _, err := user(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	p := s.watchers[id]
	s.mu.Unlock()
	if p == nil {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("%w %q", errNoWatcher, id))
	}
	return p, nil
}

// GetWatcherEvents drains the watcher's buffer. After the watched directory
// is removed, the remaining events are returned once and later calls fail
// with NotFound; the watcher still needs RemoveWatcher.
func (s *Service) GetWatcherEvents(ctx context.Context, req *connect.Request[fspb.GetWatcherEventsRequest]) (*connect.Response[fspb.GetWatcherEventsResponse], error) {
	p, err := s.watcherByID(ctx, req.Msg.GetWatcherId())
	if err != nil {
		return nil, err
	}
	events, err := p.drain()
	if err != nil {
		return nil, rootGoneError(err)
	}
	return connect.NewResponse(&fspb.GetWatcherEventsResponse{Events: events}), nil
}

// RemoveWatcher stops the watcher and forgets it; its pending events are
// discarded.
func (s *Service) RemoveWatcher(ctx context.Context, req *connect.Request[fspb.RemoveWatcherRequest]) (*connect.Response[fspb.RemoveWatcherResponse], error) {
	p, err := s.watcherByID(ctx, req.Msg.GetWatcherId())
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	owned := s.watchers[p.id] == p
	delete(s.watchers, p.id)
	s.mu.Unlock()
	if !owned {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("%w %q", errNoWatcher, p.id))
	}
	p.close()
	s.log.Debug("watcher removed", "watcher_id", p.id)
	return connect.NewResponse(&fspb.RemoveWatcherResponse{}), nil
}
