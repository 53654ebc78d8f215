package files

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/wrenn-dev/envd/internal/permissions"
)

// maxComposeBody bounds the JSON request of POST /files/compose.
const maxComposeBody = 1 << 20

type composeRequest struct {
	SourcePaths []string `json:"source_paths"`
	Destination string   `json:"destination"`
	Username    *string  `json:"username,omitempty"`
}

// compose serves POST /files/compose: it concatenates source_paths, in
// order, into destination and then deletes the sources, as E2B's envd does
// to assemble a file uploaded in chunks. The result is written to a
// temporary file next to destination and renamed over it, so a failure
// leaves any existing destination untouched; data moves kernel-side
// (copy_file_range) where the filesystem allows. The response is E2B's
// plain-route EntryInfo {"path","name","type":"file"}.
func (h *Handler) compose(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	defer r.Body.Close()
	if aerr := h.requireToken(r); aerr != nil {
		h.fail(w, r, aerr)
		return
	}
	var req composeRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxComposeBody)).Decode(&req); err != nil {
		h.fail(w, r, newError(http.StatusBadRequest, err, "invalid request body: %v", err))
		return
	}
	if len(req.SourcePaths) == 0 {
		h.fail(w, r, newError(http.StatusBadRequest, nil, "source_paths must not be empty"))
		return
	}
	if req.Destination == "" {
		h.fail(w, r, newError(http.StatusBadRequest, nil, "destination is required"))
		return
	}
	name := ""
	if req.Username != nil {
		name = *req.Username
	}
	u, aerr := h.resolveUser(r, name, false)
	if aerr != nil {
		h.fail(w, r, aerr)
		return
	}
	dest, sources, aerr := h.composePaths(req, u)
	if aerr != nil {
		h.fail(w, r, aerr)
		return
	}
	size, aerr := h.concat(dest, sources, u)
	if aerr != nil {
		h.fail(w, r, aerr)
		return
	}
	for _, s := range sources {
		if err := os.Remove(s); err != nil && !errors.Is(err, fs.ErrNotExist) {
			h.log.Warn("cannot remove composed source", "path", s, "err", err)
		}
	}
	h.log.Debug("files composed", "path", dest, "sources", len(sources), "bytes", size,
		"duration", time.Since(start))
	writeJSON(w, http.StatusOK, uploadEntry{Path: dest, Name: filepath.Base(dest), Type: "file"})
}

// composePaths resolves and checks every path before anything is written.
func (h *Handler) composePaths(req composeRequest, u *permissions.User) (string, []string, *apiError) {
	dest, aerr := h.expand(req.Destination, u)
	if aerr != nil {
		return "", nil, aerr
	}
	if fi, err := os.Stat(dest); err == nil && fi.IsDir() {
		return "", nil, newError(http.StatusBadRequest, nil, "destination is a directory: %s", dest)
	}
	sources := make([]string, 0, len(req.SourcePaths))
	for _, s := range req.SourcePaths {
		p, aerr := h.expand(s, u)
		if aerr != nil {
			return "", nil, aerr
		}
		if p == dest {
			return "", nil, newError(http.StatusBadRequest, nil, "source path %q cannot be the same as destination", s)
		}
		fi, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
			return "", nil, newError(http.StatusNotFound, err, "source file not found: %s", s)
		case err != nil:
			return "", nil, osError(err, "error checking source %s", s)
		case !fi.Mode().IsRegular():
			return "", nil, newError(http.StatusBadRequest, nil, "source path is not a regular file: %s", s)
		}
		sources = append(sources, p)
	}
	return dest, sources, nil
}

// concat writes the sources into a temporary file owned by u and renames
// it over dest.
func (h *Handler) concat(dest string, sources []string, u *permissions.User) (int64, *apiError) {
	dir := filepath.Dir(dest)
	if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
		return 0, newError(http.StatusBadRequest, nil, "parent path '%s' is not a directory", dir)
	}
	if err := permissions.EnsureDirs(dir, u.UID, u.GID); err != nil {
		return 0, osError(err, "error ensuring directories")
	}
	tmp := filepath.Join(dir, "."+filepath.Base(dest)+".compose-"+rand.Text()[:16]+".tmp")
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, osError(err, "error creating destination file")
	}
	done := false
	defer func() {
		if !done {
			out.Close()
			_ = os.Remove(tmp)
		}
	}()
	if err := out.Chown(int(u.UID), int(u.GID)); err != nil && !errors.Is(err, fs.ErrPermission) {
		return 0, osError(err, "error changing file ownership")
	}
	var total int64
	for _, s := range sources {
		n, err := appendFile(out, s)
		total += n
		if err != nil {
			return 0, osError(err, "error composing source %s", s)
		}
	}
	if err := out.Close(); err != nil {
		return 0, osError(err, "error closing destination file")
	}
	if err := os.Rename(tmp, dest); err != nil {
		return 0, osError(err, "error finalizing compose")
	}
	done = true
	return total, nil
}

func appendFile(out *os.File, src string) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	// (*os.File).ReadFrom uses copy_file_range between regular files.
	return out.ReadFrom(in)
}
