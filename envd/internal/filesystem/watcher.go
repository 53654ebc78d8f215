package filesystem

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"connectrpc.com/connect"
	"github.com/fsnotify/fsnotify"

	"github.com/wrenn-dev/envd/internal/entry"
	fspb "github.com/wrenn-dev/envd/internal/gen/filesystem"
)

// errRootGone ends a watch whose directory was deleted or moved away:
// inotify can report nothing more about it.
var errRootGone = errors.New("watched directory was removed or moved")

// watchSpec is what WatchDir and CreateWatcher share.
type watchSpec struct {
	path         string
	recursive    bool
	includeEntry bool
	allowNetwork bool
}

// opTypes maps fsnotify operations to event types, in the order events for
// one notification are emitted.
var opTypes = []struct {
	op  fsnotify.Op
	typ fspb.EventType
}{
	{fsnotify.Create, fspb.EventType_EVENT_TYPE_CREATE},
	{fsnotify.Write, fspb.EventType_EVENT_TYPE_WRITE},
	{fsnotify.Remove, fspb.EventType_EVENT_TYPE_REMOVE},
	{fsnotify.Rename, fspb.EventType_EVENT_TYPE_RENAME},
	{fsnotify.Chmod, fspb.EventType_EVENT_TYPE_CHMOD},
}

// watcher follows one directory and, when recursive, every directory below
// it, including ones created later. Its methods other than close must be
// called from the single goroutine that reads fsw's channels.
type watcher struct {
	root         string
	recursive    bool
	includeEntry bool
	fsw          *fsnotify.Watcher
	dirs         map[string]struct{} // watched directories below root
	log          *slog.Logger
	warnedAdd    bool
}

// startWatcher validates the request and starts watching. The caller must
// close the watcher.
func (s *Service) startWatcher(ctx context.Context, spec watchSpec) (*watcher, error) {
	_, root, err := s.request(ctx, spec.path)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(root)
	if err != nil {
		return nil, fsError("watch", root, err)
	}
	if !fi.IsDir() {
		return nil, invalid(root, "is not a directory")
	}
	if !spec.allowNetwork {
		fsType, err := s.netFS(root)
		if err != nil {
			return nil, fsError("statfs", root, err)
		}
		if fsType != "" {
			return nil, invalid(root, "is on a network filesystem (%s); set allow_network_mounts to watch it", fsType)
		}
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fsError("watch", root, err)
	}
	w := &watcher{
		root:         root,
		recursive:    spec.recursive,
		includeEntry: spec.includeEntry,
		fsw:          fsw,
		dirs:         map[string]struct{}{},
		log:          s.log.With("watch", root),
	}
	if err := fsw.Add(root); err != nil {
		_ = fsw.Close()
		return nil, fsError("watch", root, err)
	}
	if spec.recursive {
		w.addTree(root, nil)
	}
	return w, nil
}

func (w *watcher) close() {
	if err := w.fsw.Close(); err != nil {
		w.log.Debug("close watcher", "err", err)
	}
}

// addTree watches every directory below dir without following symlinks.
// When emit is set (dir was just created) it also reports a CREATE for each
// entry found, because those may have been made before the watch existed;
// an entry made in that window can therefore be reported twice.
func (w *watcher) addTree(dir string, emit func(*fspb.FilesystemEvent)) {
	des, err := os.ReadDir(dir)
	if err != nil {
		w.log.Debug("watch: cannot read directory", "path", dir, "err", err)
	}
	for _, de := range des {
		full := filepath.Join(dir, de.Name())
		if emit != nil {
			emit(w.event(full, fspb.EventType_EVENT_TYPE_CREATE))
		}
		if de.IsDir() {
			w.addDir(full)
			w.addTree(full, emit)
		}
	}
}

func (w *watcher) addDir(dir string) {
	if err := w.fsw.Add(dir); err != nil {
		if !w.warnedAdd && !errors.Is(err, fsnotify.ErrClosed) {
			w.warnedAdd = true
			w.log.Warn("watch: cannot watch subdirectory; changes below it are missed", "path", dir, "err", err)
		}
		return
	}
	w.dirs[dir] = struct{}{}
}

// forget drops the watches on dir and below after it was removed or moved
// (inotify keeps a moved directory's watch under its old name).
func (w *watcher) forget(dir string) {
	if _, ok := w.dirs[dir]; !ok {
		return
	}
	for d := range w.dirs {
		if d == dir || within(d, dir) {
			_ = w.fsw.Remove(d) // already gone when the directory was deleted
			delete(w.dirs, d)
		}
	}
}

// handle converts one fsnotify event, passing the results to emit, and
// keeps the recursive watch set in step. It returns errRootGone when the
// watched directory itself was removed or moved. Changes to the watched
// directory's own attributes are not reported.
func (w *watcher) handle(ev fsnotify.Event, emit func(*fspb.FilesystemEvent)) error {
	if ev.Name == w.root {
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
			return fmt.Errorf("%q: %w", w.root, errRootGone)
		}
		return nil
	}
	if !within(ev.Name, w.root) {
		return nil
	}
	if w.recursive && (ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)) {
		w.forget(ev.Name)
	}
	for _, m := range opTypes {
		if ev.Has(m.op) {
			emit(w.event(ev.Name, m.typ))
		}
	}
	if w.recursive && ev.Has(fsnotify.Create) {
		if fi, err := os.Lstat(ev.Name); err == nil && fi.IsDir() {
			w.addDir(ev.Name)
			w.addTree(ev.Name, emit)
		}
	}
	return nil
}

// within reports whether p lies strictly below dir.
func within(p, dir string) bool {
	if dir == "/" {
		return len(p) > 1 && p[0] == '/'
	}
	return strings.HasPrefix(p, dir+"/")
}

// event builds the message for full, named relative to the watched root.
func (w *watcher) event(full string, typ fspb.EventType) *fspb.FilesystemEvent {
	name, err := filepath.Rel(w.root, full)
	if err != nil {
		name = full
	}
	ev := &fspb.FilesystemEvent{Name: name, Type: typ}
	if w.includeEntry {
		if info, err := entry.Info(full); err == nil {
			ev.Entry = info
		}
	}
	return ev
}

// rootGoneError is the connect error a watch ends with once its directory
// is gone.
func rootGoneError(err error) error {
	return connect.NewError(connect.CodeNotFound, err)
}
