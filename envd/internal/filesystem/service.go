// Package filesystem serves envd's filesystem.Filesystem Connect service:
// stat, mkdir -p, move, recursive listing, removal, and directory watching
// (a WatchDir server stream and the CreateWatcher/GetWatcherEvents polling
// form). It owns the inotify watchers it creates and closes them when a
// stream ends, on RemoveWatcher and on Close.
//
// Like E2B's envd, every operation runs with envd's own (root) credentials;
// the requesting user decides how relative and "~" paths resolve, and every
// directory the service creates (MakeDir, Move's destination parents) is
// handed to that user with chown. It imports only envd's internal/state,
// internal/permissions, internal/entry and the generated code.
package filesystem

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/envd/internal/gen/filesystem/filesystemconnect"
	"github.com/wrenn-dev/envd/internal/permissions"
	"github.com/wrenn-dev/envd/internal/state"
)

var _ filesystemconnect.FilesystemHandler = (*Service)(nil)

// Service implements filesystemconnect.FilesystemHandler. It is safe for
// concurrent use.
type Service struct {
	st  *state.State
	log *slog.Logger

	// ctx is cancelled by Close; WatchDir streams end with it.
	ctx    context.Context
	cancel context.CancelFunc

	// netFS classifies a path's filesystem (networkMount; replaced in
	// tests, which cannot mount NFS).
	netFS func(path string) (string, error)

	mu       sync.Mutex
	closed   bool
	watchers map[string]*pollWatcher // CreateWatcher id -> watcher
	active   sync.WaitGroup          // running WatchDir streams and poll loops
}

// New returns the service. st supplies the default working directory that
// relative paths resolve against.
func New(st *state.State, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{
		st:       st,
		log:      log,
		ctx:      ctx,
		cancel:   cancel,
		netFS:    networkMount,
		watchers: map[string]*pollWatcher{},
	}
}

// Close stops every watcher: polling watchers are closed and forgotten,
// running WatchDir streams end with Unavailable. It waits until all of
// their goroutines have returned. Later CreateWatcher and WatchDir calls
// fail with Unavailable. Close is idempotent. A stream blocked writing to a
// client that stopped reading returns only when its connection fails, so
// Close should come after the HTTP server has stopped or closed its
// connections.
func (s *Service) Close() {
	s.mu.Lock()
	s.closed = true
	ws := s.watchers
	s.watchers = map[string]*pollWatcher{}
	s.mu.Unlock()

	s.cancel()
	for _, w := range ws {
		w.close()
	}
	s.active.Wait()
}

var errClosed = errors.New("filesystem service is shut down")

// user returns the user the server middleware resolved for this request.
func user(ctx context.Context) (*permissions.User, error) {
	u, err := permissions.FromContext(ctx)
	if err != nil {
		return nil, connect.NewError(connect.CodeUnauthenticated, err)
	}
	if u == nil {
		return nil, connect.NewError(connect.CodeUnauthenticated, permissions.ErrNoUser)
	}
	return u, nil
}

// resolve expands p for the request's user into an absolute clean path.
func (s *Service) resolve(u *permissions.User, p string) (string, error) {
	abs, err := permissions.ExpandPath(p, u, s.st.DefaultWorkdir())
	if err != nil {
		return "", connect.NewError(connect.CodeInvalidArgument, err)
	}
	return abs, nil
}

// request resolves the user and one path.
func (s *Service) request(ctx context.Context, p string) (*permissions.User, string, error) {
	u, err := user(ctx)
	if err != nil {
		return nil, "", err
	}
	abs, err := s.resolve(u, p)
	if err != nil {
		return nil, "", err
	}
	return u, abs, nil
}
