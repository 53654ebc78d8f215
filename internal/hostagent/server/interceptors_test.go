package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

func TestInterceptorsMapErrorsOnce(t *testing.T) {
	unary, stream := Interceptors(slog.New(slog.DiscardHandler))
	tests := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"ok", nil, codes.OK},
		{"not found", fmt.Errorf("sandbox sb-1: %w", errdefs.ErrNotFound), codes.NotFound},
		{"conflict", errdefs.Errorf(errdefs.ErrConflict, "paused"), codes.FailedPrecondition},
		{"exhausted", errdefs.Errorf(errdefs.ErrResourceExhausted, "memory"), codes.ResourceExhausted},
		{"already a status", status.Error(codes.Unauthenticated, "x"), codes.Unauthenticated},
		{"plain", errors.New("boom"), codes.Internal},
		{"panic", nil, codes.Internal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := func(context.Context, any) (any, error) {
				if tt.name == "panic" {
					panic("bug")
				}
				return "resp", tt.err
			}
			_, err := unary(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/x/Y"}, h)
			if got := status.Code(err); got != tt.want {
				t.Fatalf("unary: code %v (%v), want %v", got, err, tt.want)
			}
			if tt.err != nil && status.Convert(err).Message() != tt.err.Error() && tt.name != "already a status" {
				t.Fatalf("message %q, want %q", status.Convert(err).Message(), tt.err.Error())
			}
			sh := func(any, grpc.ServerStream) error {
				if tt.name == "panic" {
					panic("bug")
				}
				return tt.err
			}
			err = stream(nil, nil, &grpc.StreamServerInfo{FullMethod: "/x/Z"}, sh)
			if got := status.Code(err); got != tt.want {
				t.Fatalf("stream: code %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}
