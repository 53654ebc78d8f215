package filesystem

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	fspb "github.com/wrenn-dev/envd/internal/gen/filesystem"
)

const (
	// keepaliveHeader carries the keepalive period in whole seconds.
	keepaliveHeader = "Keepalive-Ping-Interval"
	// defaultKeepalive applies when the header is absent or unusable.
	defaultKeepalive = 90 * time.Second
	// maxKeepalive bounds the header so the duration cannot overflow.
	maxKeepalive = 24 * time.Hour
)

// keepaliveInterval reads the Keepalive-Ping-Interval request header.
func keepaliveInterval(h http.Header) time.Duration {
	n, err := strconv.Atoi(strings.TrimSpace(h.Get(keepaliveHeader)))
	if err != nil || n <= 0 {
		return defaultKeepalive
	}
	if n > int(maxKeepalive/time.Second) {
		return maxKeepalive
	}
	return time.Duration(n) * time.Second
}

// begin registers a running watch so Close can wait for it; it fails once
// the service is closed.
func (s *Service) begin() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return connect.NewError(connect.CodeUnavailable, errClosed)
	}
	s.active.Add(1)
	return nil
}

// WatchDir streams changes under a directory: a start event once the watch
// is in place, then filesystem events, with keepalive events after every
// Keepalive-Ping-Interval seconds without traffic. The stream ends when the
// client goes away (the watch is released then), when the directory itself
// is removed or moved (NotFound), or when the service closes (Unavailable).
// If the kernel's event queue overflows, events are lost and a warning is
// logged; the stream goes on.
func (s *Service) WatchDir(ctx context.Context, req *connect.Request[fspb.WatchDirRequest], stream *connect.ServerStream[fspb.WatchDirResponse]) error {
	m := req.Msg
	w, err := s.startWatcher(ctx, watchSpec{
		path:         m.GetPath(),
		recursive:    m.GetRecursive(),
		includeEntry: m.GetIncludeEntry(),
		allowNetwork: m.GetAllowNetworkMounts(),
	})
	if err != nil {
		return err
	}
	defer w.close()
	if err := s.begin(); err != nil {
		return err
	}
	defer s.active.Done()

	interval := keepaliveInterval(req.Header())
	timer := time.NewTimer(interval)
	defer timer.Stop()
	send := func(resp *fspb.WatchDirResponse) error {
		if err := stream.Send(resp); err != nil {
			return err
		}
		timer.Reset(interval)
		return nil
	}

	if err := send(&fspb.WatchDirResponse{Event: &fspb.WatchDirResponse_Start{Start: &fspb.WatchDirResponse_StartEvent{}}}); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.ctx.Done():
			return connect.NewError(connect.CodeUnavailable, errClosed)
		case <-timer.C:
			if err := send(&fspb.WatchDirResponse{Event: &fspb.WatchDirResponse_Keepalive{Keepalive: &fspb.WatchDirResponse_KeepAlive{}}}); err != nil {
				return err
			}
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return connect.NewError(connect.CodeInternal, errors.New("watcher stopped"))
			}
			w.log.Warn("watch error; events may have been lost", "err", err)
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return connect.NewError(connect.CodeInternal, errors.New("watcher stopped"))
			}
			var sendErr error
			err := w.handle(ev, func(fe *fspb.FilesystemEvent) {
				if sendErr == nil {
					sendErr = send(&fspb.WatchDirResponse{Event: &fspb.WatchDirResponse_Filesystem{Filesystem: fe}})
				}
			})
			if sendErr != nil {
				return sendErr
			}
			if err != nil {
				return rootGoneError(err)
			}
		}
	}
}
