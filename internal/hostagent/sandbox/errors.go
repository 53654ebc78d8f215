package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

// connectKinds maps envd's Connect error codes to errdefs.
var connectKinds = map[connect.Code]error{
	connect.CodeInvalidArgument:    errdefs.ErrInvalidArgument,
	connect.CodeOutOfRange:         errdefs.ErrInvalidArgument,
	connect.CodeNotFound:           errdefs.ErrNotFound,
	connect.CodeAlreadyExists:      errdefs.ErrAlreadyExists,
	connect.CodeFailedPrecondition: errdefs.ErrConflict,
	connect.CodeAborted:            errdefs.ErrConflict,
	connect.CodePermissionDenied:   errdefs.ErrPermissionDenied,
	// envd's token is the agent's business, not the caller's: a 401 from
	// envd is an agent-side fault.
	connect.CodeUnauthenticated:   errdefs.ErrInternal,
	connect.CodeResourceExhausted: errdefs.ErrResourceExhausted,
	connect.CodeUnavailable:       errdefs.ErrUnavailable,
	connect.CodeDeadlineExceeded:  errdefs.ErrDeadlineExceeded,
	connect.CodeCanceled:          errdefs.ErrCanceled,
	connect.CodeUnimplemented:     errdefs.ErrNotImplemented,
}

// httpKinds maps envd's plain-route statuses to errdefs.
var httpKinds = map[int]error{
	http.StatusBadRequest:            errdefs.ErrInvalidArgument,
	http.StatusNotFound:              errdefs.ErrNotFound,
	http.StatusForbidden:             errdefs.ErrPermissionDenied,
	http.StatusConflict:              errdefs.ErrConflict,
	http.StatusRequestEntityTooLarge: errdefs.ErrInvalidArgument,
	http.StatusInsufficientStorage:   errdefs.ErrResourceExhausted,
	http.StatusServiceUnavailable:    errdefs.ErrUnavailable,
	http.StatusUnauthorized:          errdefs.ErrInternal,
}

// envdError gives an error from envd its errdefs kind, keeping the text.
func envdError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return err
	}
	var herr *envdclient.HTTPError
	if errors.As(err, &herr) {
		if k, ok := httpKinds[herr.Status]; ok {
			return fmt.Errorf("%w: %w", k, err)
		}
		return err
	}
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		if k, ok := connectKinds[cerr.Code()]; ok {
			return fmt.Errorf("%w: %s", k, cerr.Message())
		}
		if cerr.Code() == connect.CodeUnknown || cerr.Code() == connect.CodeInternal {
			return fmt.Errorf("envd: %w", err)
		}
	}
	return fmt.Errorf("%w: envd: %w", errdefs.ErrUnavailable, err)
}
