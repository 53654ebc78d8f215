package api

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

// The stable error codes of the {"error":{"code","message"}} body.
const (
	CodeInvalidRequest  = "invalid_request"
	CodeUnauthorized    = "unauthorized"
	CodeForbidden       = "forbidden"
	CodeNotFound        = "not_found"
	CodeConflict        = "conflict"
	CodePoolExhausted   = "pool_exhausted"
	CodeRateLimited     = "rate_limited"
	CodeHostUnavailable = "host_unavailable"
	CodePayloadTooLarge = "payload_too_large"
	CodeInternal        = "internal"
)

// ErrorBody is the JSON of every error response.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is a code and a message for people.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

var (
	errNotFoundRoute = errdefs.Errorf(errdefs.ErrNotFound, "no such route")
	errMethod        = &httpError{status: http.StatusMethodNotAllowed, code: CodeInvalidRequest, msg: "method not allowed"}
	errTooLarge      = &httpError{status: http.StatusRequestEntityTooLarge, code: CodePayloadTooLarge, msg: "request body too large"}
)

// httpError is an error that already knows its response.
type httpError struct {
	status     int
	code, msg  string
	retryAfter int // seconds; 0 = no header
}

func (e *httpError) Error() string { return e.msg }

// classify is the one mapping from errors to (HTTP status, code, message
// shown). Internal errors get a fixed message; the cause is logged.
func classify(err error) (int, string, string) {
	var he *httpError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &he):
		return he.status, he.code, he.msg
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, CodePayloadTooLarge,
			"request body exceeds " + strconv.FormatInt(mbe.Limit, 10) + " bytes"
	case errors.Is(err, errdefs.ErrPoolExhausted):
		return http.StatusTooManyRequests, CodePoolExhausted, err.Error()
	case errors.Is(err, errdefs.ErrRateLimited):
		return http.StatusTooManyRequests, CodeRateLimited, err.Error()
	case errors.Is(err, errdefs.ErrInvalidArgument):
		return http.StatusBadRequest, CodeInvalidRequest, err.Error()
	case errors.Is(err, errdefs.ErrUnauthenticated):
		return http.StatusUnauthorized, CodeUnauthorized, "missing, invalid or revoked API key"
	case errors.Is(err, errdefs.ErrPermissionDenied):
		return http.StatusForbidden, CodeForbidden, err.Error()
	case errors.Is(err, errdefs.ErrNotFound):
		return http.StatusNotFound, CodeNotFound, err.Error()
	case errors.Is(err, errdefs.ErrConflict), errors.Is(err, errdefs.ErrAlreadyExists):
		return http.StatusConflict, CodeConflict, err.Error()
	case errors.Is(err, errdefs.ErrResourceExhausted), errors.Is(err, errdefs.ErrUnavailable):
		return http.StatusServiceUnavailable, CodeHostUnavailable, err.Error()
	case errors.Is(err, errdefs.ErrDeadlineExceeded):
		return http.StatusGatewayTimeout, CodeHostUnavailable, err.Error()
	case errors.Is(err, errdefs.ErrNotImplemented):
		return http.StatusNotImplemented, CodeInvalidRequest, err.Error()
	}
	return http.StatusInternalServerError, CodeInternal, "internal error"
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code, msg := classify(err)
	lvl := slog.LevelDebug
	if status >= 500 {
		lvl = slog.LevelError
	}
	s.log.Log(r.Context(), lvl, "request failed", "request_id", requestIDFrom(r.Context()),
		"status", status, "code", code, "err", err)
	var he *httpError
	if errors.As(err, &he) && he.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(he.retryAfter))
	}
	writeJSON(w, status, ErrorBody{Error: ErrorDetail{Code: code, Message: msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
