package api

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

const maxPathLen = 4096

func checkPath(p string) error {
	if p == "" || len(p) > maxPathLen || strings.ContainsRune(p, 0) {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "path: want a non-empty path without NUL, at most %d bytes", maxPathLen)
	}
	return nil
}

// FileWritten is the response of PUT /v1/sandboxes/{id}/files.
type FileWritten struct {
	Path         string `json:"path"`
	BytesWritten int64  `json:"bytes_written"`
}

func (s *Server) writeFile(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Query().Get("path")
	if err := checkPath(path); err != nil {
		s.writeError(w, r, err)
		return
	}
	var mode uint32
	if m := r.URL.Query().Get("mode"); m != "" {
		v, err := strconv.ParseUint(m, 8, 32)
		if err != nil || v > 0o7777 {
			s.writeError(w, r, errdefs.Errorf(errdefs.ErrInvalidArgument, "mode %q: want octal permission bits", m))
			return
		}
		mode = uint32(v)
	}
	if r.ContentLength > s.cfg.MaxUploadBytes {
		s.writeError(w, r, &http.MaxBytesError{Limit: s.cfg.MaxUploadBytes})
		return
	}
	sb, agent, err := s.running(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer s.busy(sb.ID)()
	start := time.Now()
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxUploadBytes)
	size := max(r.ContentLength, 0) // 0 = unknown
	resp, err := agent.WriteFile(r.Context(), &pb.WriteFileHeader{SandboxId: sb.ID, Path: path, Mode: mode, Size: size}, body)
	var n int64
	if resp != nil {
		n = resp.GetBytesWritten()
	}
	s.record(r, sb, store.AuditEvent{Type: store.AuditFileWrite, Path: truncate(path, 1024),
		DurationMS: time.Since(start).Milliseconds(), BytesIn: n, Error: errText(err, "")})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, FileWritten{Path: resp.GetPath(), BytesWritten: n})
}

func (s *Server) readFile(w http.ResponseWriter, r *http.Request) {
	path := chi.URLParam(r, "*")
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	if err := checkPath(path); err != nil {
		s.writeError(w, r, err)
		return
	}
	sb, agent, err := s.running(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer s.busy(sb.ID)()
	start := time.Now()
	headerOut := false
	n, err := agent.ReadFile(r.Context(), &pb.ReadFileRequest{SandboxId: sb.ID, Path: path},
		func(size int64) error {
			w.Header().Set("Content-Type", "application/octet-stream")
			if size >= 0 {
				w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
			}
			w.WriteHeader(http.StatusOK)
			headerOut = true
			return nil
		}, w)
	s.record(r, sb, store.AuditEvent{Type: store.AuditFileRead, Path: truncate(path, 1024),
		DurationMS: time.Since(start).Milliseconds(), BytesOut: n, Error: errText(err, "")})
	if err != nil {
		if !headerOut {
			s.writeError(w, r, err)
			return
		}
		// Too late for a status: cut the connection so the client sees a
		// short body rather than a complete-looking one.
		s.log.Warn("read file failed mid-stream", "sandbox_id", sb.ID, "err", err)
		if r.Context().Err() == nil {
			panic(http.ErrAbortHandler)
		}
	}
}
