package files

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"syscall"
)

// apiError is a refusal: the status and message the client sees, and the
// cause that goes to the log only.
type apiError struct {
	status int
	msg    string
	cause  error
}

func (e *apiError) Error() string { return e.msg }

func newError(status int, cause error, format string, args ...any) *apiError {
	return &apiError{status: status, msg: fmt.Sprintf(format, args...), cause: cause}
}

// errorBody is E2B envd's error shape for the plain routes.
type errorBody struct {
	Message string `json:"message"`
	Code    int    `json:"code"`
}

func (h *Handler) fail(w http.ResponseWriter, r *http.Request, e *apiError) {
	level := slog.LevelInfo
	if e.status >= 500 {
		level = slog.LevelError
	}
	h.log.Log(r.Context(), level, "files request refused",
		"method", r.Method, "route", r.URL.Path, "status", e.status,
		"message", e.msg, "err", e.cause)
	writeJSON(w, e.status, errorBody{Message: e.msg, Code: e.status})
}

// osStatus maps a filesystem error to the HTTP status E2B clients expect.
func osStatus(err error) int {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return http.StatusNotFound
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return http.StatusInsufficientStorage
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.EROFS):
		return http.StatusForbidden
	case errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.ENOTDIR),
		errors.Is(err, syscall.ENAMETOOLONG), errors.Is(err, syscall.ELOOP),
		errors.Is(err, syscall.EINVAL):
		return http.StatusBadRequest
	case errors.Is(err, syscall.ETXTBSY):
		return http.StatusConflict
	default:
		return http.StatusInternalServerError
	}
}

// osError wraps a filesystem error as a refusal with its mapped status.
func osError(err error, format string, args ...any) *apiError {
	msg := fmt.Sprintf(format, args...)
	if osStatus(err) == http.StatusInsufficientStorage {
		msg += ": not enough disk space available"
	}
	return &apiError{status: osStatus(err), msg: fmt.Sprintf("%s: %v", msg, err), cause: err}
}
