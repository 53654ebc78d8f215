package errdefs

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// codeOf maps each sentinel to its gRPC code.
var codeOf = map[error]codes.Code{
	ErrInvalidArgument:   codes.InvalidArgument,
	ErrNotFound:          codes.NotFound,
	ErrAlreadyExists:     codes.AlreadyExists,
	ErrConflict:          codes.FailedPrecondition,
	ErrResourceExhausted: codes.ResourceExhausted,
	ErrPoolExhausted:     codes.ResourceExhausted,
	ErrRateLimited:       codes.ResourceExhausted,
	ErrUnavailable:       codes.Unavailable,
	ErrUnauthenticated:   codes.Unauthenticated,
	ErrPermissionDenied:  codes.PermissionDenied,
	ErrNotImplemented:    codes.Unimplemented,
	ErrDeadlineExceeded:  codes.DeadlineExceeded,
	ErrCanceled:          codes.Canceled,
	ErrInternal:          codes.Internal,
}

// sentinelOf is the reverse of codeOf (refinements map to their parent).
var sentinelOf = map[codes.Code]error{
	codes.InvalidArgument:    ErrInvalidArgument,
	codes.OutOfRange:         ErrInvalidArgument,
	codes.NotFound:           ErrNotFound,
	codes.AlreadyExists:      ErrAlreadyExists,
	codes.FailedPrecondition: ErrConflict,
	codes.Aborted:            ErrConflict,
	codes.ResourceExhausted:  ErrResourceExhausted,
	codes.Unavailable:        ErrUnavailable,
	codes.Unauthenticated:    ErrUnauthenticated,
	codes.PermissionDenied:   ErrPermissionDenied,
	codes.Unimplemented:      ErrNotImplemented,
	codes.DeadlineExceeded:   ErrDeadlineExceeded,
	codes.Canceled:           ErrCanceled,
	codes.Internal:           ErrInternal,
	codes.Unknown:            ErrInternal,
	codes.DataLoss:           ErrInternal,
}

// Code returns the gRPC code for err (codes.OK for nil).
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		return s.Code()
	}
	return codeOf[Kind(err)]
}

// ToGRPC turns err into a gRPC status error with err's code and message.
// A status error (or one wrapping it) keeps its code. Internal errors keep
// their message too: the agent's only client is the control plane, which
// logs it and shows users its own text.
func ToGRPC(err error) error {
	if err == nil {
		return nil
	}
	return status.Error(Code(err), err.Error())
}

// FromGRPC turns a gRPC status error back into an error that wraps the
// matching sentinel, with the status message as its text. Non-status
// errors are returned unchanged.
func FromGRPC(err error) error {
	if err == nil {
		return nil
	}
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	sentinel, ok := sentinelOf[s.Code()]
	if !ok {
		sentinel = ErrInternal
	}
	return &remote{msg: s.Message(), kind: sentinel, code: s.Code()}
}

// remote is an error that came over gRPC.
type remote struct {
	msg  string
	kind error
	code codes.Code
}

func (e *remote) Error() string {
	if e.msg == "" {
		return e.kind.Error()
	}
	return e.msg
}

func (e *remote) Unwrap() error { return e.kind }

// GRPCStatus lets status.FromError (and a proxying server's ToGRPC) see
// the original code.
func (e *remote) GRPCStatus() *status.Status { return status.New(e.code, e.msg) }
