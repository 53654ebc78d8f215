package errdefs

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestKindAndCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		kind error
		code codes.Code
	}{
		{"nil", nil, nil, codes.OK},
		{"not found wrapped", fmt.Errorf("sandbox sb-1: %w", ErrNotFound), ErrNotFound, codes.NotFound},
		{"conflict", Errorf(ErrConflict, "sandbox is paused"), ErrConflict, codes.FailedPrecondition},
		{"already exists", ErrAlreadyExists, ErrAlreadyExists, codes.AlreadyExists},
		{"host exhausted", fmt.Errorf("reserve memory: %w", ErrResourceExhausted), ErrResourceExhausted, codes.ResourceExhausted},
		{"pool exhausted", fmt.Errorf("quota: %w", ErrPoolExhausted), ErrPoolExhausted, codes.ResourceExhausted},
		{"invalid", ErrInvalidArgument, ErrInvalidArgument, codes.InvalidArgument},
		{"unavailable", ErrUnavailable, ErrUnavailable, codes.Unavailable},
		{"unimplemented", ErrNotImplemented, ErrNotImplemented, codes.Unimplemented},
		{"deadline", fmt.Errorf("boot: %w", context.DeadlineExceeded), ErrDeadlineExceeded, codes.DeadlineExceeded},
		{"canceled", context.Canceled, ErrCanceled, codes.Canceled},
		{"plain", errors.New("disk on fire"), ErrInternal, codes.Internal},
		{"status passes through", status.Error(codes.Aborted, "x"), ErrInternal, codes.Aborted},
		{"joined", errors.Join(errors.New("a"), ErrNotFound), ErrNotFound, codes.NotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Kind(tt.err); got != tt.kind {
				t.Errorf("Kind = %v, want %v", got, tt.kind)
			}
			if got := Code(tt.err); got != tt.code {
				t.Errorf("Code = %v, want %v", got, tt.code)
			}
		})
	}
}

func TestRefinementsMatchParents(t *testing.T) {
	if !errors.Is(ErrPoolExhausted, ErrResourceExhausted) || !errors.Is(ErrRateLimited, ErrResourceExhausted) {
		t.Fatal("refinements must match ErrResourceExhausted")
	}
	if errors.Is(ErrResourceExhausted, ErrPoolExhausted) {
		t.Fatal("parent must not match a refinement")
	}
}

func TestRoundTrip(t *testing.T) {
	for _, k := range []error{
		ErrInvalidArgument, ErrNotFound, ErrAlreadyExists, ErrConflict,
		ErrResourceExhausted, ErrUnavailable, ErrUnauthenticated,
		ErrPermissionDenied, ErrNotImplemented, ErrDeadlineExceeded,
		ErrCanceled, ErrInternal,
	} {
		in := fmt.Errorf("sandbox sb-12345678: %w", k)
		wire := ToGRPC(in)
		s, ok := status.FromError(wire)
		if !ok {
			t.Fatalf("%v: ToGRPC did not produce a status", k)
		}
		if s.Message() != in.Error() {
			t.Errorf("%v: message %q, want %q", k, s.Message(), in.Error())
		}
		back := FromGRPC(wire)
		if !errors.Is(back, k) {
			t.Errorf("%v: FromGRPC(ToGRPC(err)) = %v does not match", k, back)
		}
		if back.Error() != in.Error() {
			t.Errorf("%v: text %q, want %q", k, back.Error(), in.Error())
		}
		// A proxy that relays the error keeps the code.
		if got := Code(ToGRPC(fmt.Errorf("relay: %w", back))); got != Code(in) {
			t.Errorf("%v: relayed code %v, want %v", k, got, Code(in))
		}
	}
	if FromGRPC(nil) != nil || ToGRPC(nil) != nil {
		t.Fatal("nil must stay nil")
	}
	plain := errors.New("not a status")
	if FromGRPC(plain) != plain {
		t.Fatal("a non-status error must pass through FromGRPC")
	}
}

func TestErrorf(t *testing.T) {
	err := Errorf(ErrNotFound, "sandbox %s", "sb-1")
	if err.Error() != "sandbox sb-1: not found" || !IsNotFound(err) {
		t.Fatalf("Errorf = %q", err)
	}
}
