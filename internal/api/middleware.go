package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"runtime/debug"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/wrenn-dev/wrenn-sandbox/internal/auth"
	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

type ctxKey int

const (
	keyRequestID ctxKey = iota
	keyAPIKey
)

var requestIDRe = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func requestIDFrom(ctx context.Context) string {
	s, _ := ctx.Value(keyRequestID).(string)
	return s
}

// apiKeyFrom returns the authenticated key of the request.
func apiKeyFrom(ctx context.Context) store.APIKey {
	k, _ := ctx.Value(keyAPIKey).(store.APIKey)
	return k
}

// requestID takes a sane X-Request-ID or makes one, and echoes it.
func (s *Server) requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rid := r.Header.Get("X-Request-ID")
		if !requestIDRe.MatchString(rid) {
			b := make([]byte, 8)
			_, _ = rand.Read(b)
			rid = hex.EncodeToString(b)
		}
		w.Header().Set("X-Request-ID", rid)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), keyRequestID, rid)))
	})
}

// statusWriter records the status code; it forwards Flush for streaming.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		route := chi.RouteContext(r.Context()).RoutePattern()
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "http request",
			slog.String("request_id", requestIDFrom(r.Context())),
			slog.String("method", r.Method), slog.String("route", route),
			slog.Int("status", sw.status), slog.Int64("bytes", sw.bytes),
			slog.Duration("duration", time.Since(start)),
			slog.String("owner_id", apiKeyFrom(r.Context()).OwnerID))
	})
}

func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("handler panic", "request_id", requestIDFrom(r.Context()),
					"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				s.writeError(w, r, fmt.Errorf("panic: %v", v))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// authenticate resolves X-API-Key into the key record.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		presented := r.Header.Get("X-API-Key")
		if presented == "" {
			s.writeError(w, r, errdefs.Errorf(errdefs.ErrUnauthenticated, "missing X-API-Key"))
			return
		}
		k, err := s.authn.Authenticate(r.Context(), presented)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if k.LastUsedAt == nil || time.Since(*k.LastUsedAt) > time.Minute {
			// Best effort and off the request path: a failed touch loses
			// only a last-used time.
			go func(id string) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := s.st.TouchAPIKey(ctx, id); err != nil {
					s.log.Debug("touch api key", "err", err)
				}
			}(k.ID)
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), keyAPIKey, k)))
	})
}

func (s *Server) rateLimit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := apiKeyFrom(r.Context())
		d := s.limiter.Allow(k.ID, auth.Limit{Rate: k.RateLimitPerSec, Burst: k.RateLimitBurst})
		if !d.Allowed {
			secs := auth.RetryAfterSeconds(d.RetryAfter)
			s.writeError(w, r, &httpError{status: http.StatusTooManyRequests, code: CodeRateLimited,
				msg: fmt.Sprintf("rate limit exceeded; retry in %d s", secs), retryAfter: secs})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) adminOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !apiKeyFrom(r.Context()).IsAdmin {
			s.writeError(w, r, errdefs.Errorf(errdefs.ErrPermissionDenied, "an admin API key is required"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// decodeJSON reads one JSON object of at most MaxJSONBytes into v,
// refusing unknown fields and trailing data. An empty body is allowed
// when emptyOK (v keeps its zero value).
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any, emptyOK bool) error {
	body := http.MaxBytesReader(w, r.Body, s.cfg.MaxJSONBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return err
		case errors.Is(err, io.EOF) && emptyOK:
			return nil
		case errors.Is(err, io.EOF):
			return errdefs.Errorf(errdefs.ErrInvalidArgument, "request body is empty")
		}
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "invalid JSON body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "invalid JSON body: trailing data after the object")
	}
	return nil
}
