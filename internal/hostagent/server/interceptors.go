package server

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

// Interceptors returns the server's unary and stream interceptors: panic
// recovery, one log line per call, and the translation of errdefs errors
// to gRPC status codes. Install them innermost (after metrics), so
// metrics see the final codes.
func Interceptors(log *slog.Logger) (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		start := time.Now()
		defer func() {
			if p := recover(); p != nil {
				log.Error("panic in rpc", "method", info.FullMethod, "panic", p, "stack", string(debug.Stack()))
				err = fmt.Errorf("%w: panic: %v", errdefs.ErrInternal, p)
			}
			err = finish(log, info.FullMethod, start, err)
		}()
		return h(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
		start := time.Now()
		defer func() {
			if p := recover(); p != nil {
				log.Error("panic in rpc", "method", info.FullMethod, "panic", p, "stack", string(debug.Stack()))
				err = fmt.Errorf("%w: panic: %v", errdefs.ErrInternal, p)
			}
			err = finish(log, info.FullMethod, start, err)
		}()
		return h(srv, ss)
	}
	return unary, stream
}

// finish logs a call and maps its error.
func finish(log *slog.Logger, method string, start time.Time, err error) error {
	if err == nil {
		log.Debug("rpc", "method", method, "took", time.Since(start))
		return nil
	}
	gerr := errdefs.ToGRPC(err)
	code := errdefs.Code(gerr)
	lvl := slog.LevelInfo
	if code == codes.Internal || code == codes.Unknown || code == codes.Unavailable {
		lvl = slog.LevelError
	}
	log.Log(context.Background(), lvl, "rpc failed", "method", method, "code", code.String(), "err", err, "took", time.Since(start))
	return gerr
}
