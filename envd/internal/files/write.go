package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"syscall"

	"github.com/wrenn-dev/envd/internal/entry"
	"github.com/wrenn-dev/envd/internal/permissions"
)

// writeFile streams src into path for u, the way E2B's envd does: missing
// parent directories are created and handed to u, and the file is
// truncated and rewritten in place (O_TRUNC, not a temporary file renamed
// over it), so its inode, hard links, a symlink at path, open descriptors
// and its mode survive, and watchers see a WRITE of path itself. The file
// is then owned by u, and its user.e2b.* xattrs are replaced by md (an
// empty md clears them, since O_TRUNC keeps xattrs).
//
// The price of writing in place is that a failed upload leaves a partial
// file. When the file did not exist before, the partial file is removed.
func (h *Handler) writeFile(ctx context.Context, path string, src io.Reader, u *permissions.User, md map[string]string) (*uploadEntry, *apiError) {
	if err := ctx.Err(); err != nil {
		return nil, newError(http.StatusBadRequest, err, "request cancelled: %v", err)
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return nil, newError(http.StatusBadRequest, nil, "parent path '%s' is not a directory", dir)
	}
	if err := permissions.EnsureDirs(dir, u.UID, u.GID); err != nil {
		return nil, osError(err, "error ensuring directories")
	}
	existed := false
	if _, err := os.Lstat(path); err == nil {
		existed = true
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, osError(err, "error getting file info")
	}
	if fi, err := os.Stat(path); err == nil {
		switch {
		case fi.IsDir():
			return nil, newError(http.StatusBadRequest, nil, "path is a directory: %s", path)
		case !fi.Mode().IsRegular():
			// A FIFO would block the open; a device would be handed to u.
			return nil, newError(http.StatusBadRequest, nil, "path is not a regular file: %s", path)
		}
	}

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, osError(err, "error opening file")
	}
	done := false
	defer func() {
		if done {
			return
		}
		f.Close()
		if !existed {
			_ = os.Remove(path)
		}
	}()
	if err := f.Chown(int(u.UID), int(u.GID)); err != nil {
		if !errors.Is(err, fs.ErrPermission) {
			return nil, osError(err, "error changing file ownership")
		}
		h.log.Warn("cannot chown uploaded file", "path", path, "user", u.Name, "err", err)
	}

	buf := h.getBuf()
	defer h.putBuf(buf)
	// fileWriter hides (*os.File).ReadFrom so the pooled buffer is used and
	// write errors can be told apart from read errors.
	if _, err := io.CopyBuffer(fileWriter{f}, src, *buf); err != nil {
		return nil, copyError(err, path)
	}

	real := path
	if existed {
		if p, err := filepath.EvalSymlinks(path); err == nil {
			real = p
		}
	}
	if err := entry.ReplaceMetadata(real, md); err != nil {
		if !errors.Is(err, entry.ErrXattrUnsupported) {
			return nil, osError(err, "error writing file metadata")
		}
		if len(md) > 0 {
			h.log.Warn("filesystem cannot store metadata; not persisted", "path", path)
		}
	}
	if err := f.Close(); err != nil {
		return nil, osError(err, "error writing file")
	}
	done = true

	e := &uploadEntry{Path: path, Name: filepath.Base(path), Type: "file"}
	if m := entry.ReadMetadata(real); len(m) > 0 {
		e.Metadata = m
	}
	return e, nil
}

type fileWriter struct{ f *os.File }

func (w fileWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if err != nil {
		err = &writeError{err}
	}
	return n, err
}

// writeError marks an error of the file side of a copy.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

func copyError(err error, path string) *apiError {
	var we *writeError
	if errors.As(err, &we) {
		return osError(we.err, "error writing file '%s'", path)
	}
	return bodyError(err, "error reading upload body")
}

// bodyError maps an error reading the request body.
func bodyError(err error, what string) *apiError {
	var tl *tooLargeError
	if errors.As(err, &tl) {
		return tooLarge(tl.limit)
	}
	if errors.Is(err, syscall.ENOSPC) {
		return osError(err, "%s", what)
	}
	return newError(http.StatusBadRequest, err, "%s: %v", what, err)
}

type tooLargeError struct{ limit int64 }

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("upload body exceeds the limit of %d bytes", e.limit)
}

func tooLarge(limit int64) *apiError {
	err := &tooLargeError{limit}
	return newError(http.StatusRequestEntityTooLarge, err, "%v", err)
}

// limitedBody fails with a tooLargeError once more than limit bytes come
// out of the wrapped reader; up to limit bytes read normally.
type limitedBody struct {
	io.ReadCloser
	limit int64
	left  int64
	err   error
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	if l.left <= 0 {
		var one [1]byte
		n, err := l.ReadCloser.Read(one[:])
		if n > 0 {
			l.err = &tooLargeError{limit: l.limit}
			return 0, l.err
		}
		return 0, err
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.ReadCloser.Read(p)
	l.left -= int64(n)
	return n, err
}
