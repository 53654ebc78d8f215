// Package errdefs is Wrenn's one error vocabulary. Core packages wrap these
// sentinels (fmt.Errorf("...: %w", errdefs.ErrNotFound)); each edge translates
// them exactly once: to gRPC status codes in the host agent's server (ToGRPC),
// back to sentinels in its gRPC clients (FromGRPC), and to the REST error
// body in the control plane. It imports nothing from either tier.
package errdefs

import (
	"context"
	"errors"
	"fmt"
)

// The sentinels. Match with errors.Is.
var (
	// ErrInvalidArgument: the request is malformed or names impossible values.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: the named object does not exist (or is not the caller's).
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: an object with that key exists and differs from
	// what the request asks for.
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict: the object is in a state that does not allow the
	// operation (pause a hibernated sandbox, illegal state transition).
	ErrConflict = errors.New("conflict")
	// ErrResourceExhausted: not enough capacity (host memory, vCPUs, IP
	// addresses, disk).
	ErrResourceExhausted = errors.New("resource exhausted")
	// ErrUnavailable: a dependency is down or not ready; retrying may work.
	ErrUnavailable = errors.New("unavailable")
	// ErrUnauthenticated: missing or invalid credentials.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermissionDenied: authenticated but not allowed.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrNotImplemented: the operation is not supported here (for example
	// snapshots on a driver that lacks them).
	ErrNotImplemented = errors.New("not implemented")
	// ErrDeadlineExceeded: the operation ran out of time.
	ErrDeadlineExceeded = errors.New("deadline exceeded")
	// ErrCanceled: the caller went away.
	ErrCanceled = errors.New("canceled")
	// ErrInternal: a bug or an unexpected failure; the message is logged,
	// not shown to users.
	ErrInternal = errors.New("internal error")
)

// Refinements of the sentinels above. Each also matches its parent with
// errors.Is, so an edge that only knows the parent still maps it right.
var (
	// ErrPoolExhausted: an owner's pool quota is used up (a kind of
	// ErrResourceExhausted).
	ErrPoolExhausted = wrap("pool exhausted", ErrResourceExhausted)
	// ErrRateLimited: too many requests (a kind of ErrResourceExhausted).
	ErrRateLimited = wrap("rate limited", ErrResourceExhausted)
)

type refined struct {
	msg    string
	parent error
}

func (e *refined) Error() string { return e.msg }
func (e *refined) Unwrap() error { return e.parent }

func wrap(msg string, parent error) error { return &refined{msg: msg, parent: parent} }

// kinds lists the sentinels in the order Kind checks them; refinements
// come before their parents.
var kinds = []error{
	ErrPoolExhausted, ErrRateLimited,
	ErrInvalidArgument, ErrNotFound, ErrAlreadyExists, ErrConflict,
	ErrResourceExhausted, ErrUnavailable, ErrUnauthenticated,
	ErrPermissionDenied, ErrNotImplemented, ErrDeadlineExceeded,
	ErrCanceled, ErrInternal,
}

// Kind returns the sentinel err wraps, mapping the context package's
// errors to ErrDeadlineExceeded and ErrCanceled; ErrInternal when none.
func Kind(err error) error {
	if err == nil {
		return nil
	}
	for _, k := range kinds {
		if errors.Is(err, k) {
			return k
		}
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return ErrDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return ErrCanceled
	}
	return ErrInternal
}

// Is* helpers read better at call sites than errors.Is with a sentinel.

// IsNotFound reports whether err is (or wraps) ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsConflict reports whether err is (or wraps) ErrConflict.
func IsConflict(err error) bool { return errors.Is(err, ErrConflict) }

// IsResourceExhausted reports whether err is (or wraps) ErrResourceExhausted.
func IsResourceExhausted(err error) bool { return errors.Is(err, ErrResourceExhausted) }

// IsInvalidArgument reports whether err is (or wraps) ErrInvalidArgument.
func IsInvalidArgument(err error) bool { return errors.Is(err, ErrInvalidArgument) }

// Errorf is fmt.Errorf that also wraps kind:
// Errorf(ErrNotFound, "sandbox %s", id) reads "sandbox sb-1: not found".
func Errorf(kind error, format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), kind)
}
