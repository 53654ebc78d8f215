package metrics

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// rpcBuckets span an exec round trip (sub-millisecond) to a cold create
// or a long stream.
var rpcBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}

// rpcMetrics are the agent's gRPC server metrics. Labels: service and
// method from the full method name, type (unary, client_stream,
// server_stream, bidi_stream) and the status code.
type rpcMetrics struct {
	started  *prometheus.CounterVec
	handled  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	recv     *prometheus.CounterVec
	sent     *prometheus.CounterVec
}

func newRPCMetrics() *rpcMetrics {
	base := []string{"service", "method", "type"}
	return &rpcMetrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "agent", Name: "rpc_started_total",
			Help: "gRPC calls the agent started handling.",
		}, base),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "agent", Name: "rpc_handled_total",
			Help: "gRPC calls the agent finished, by status code.",
		}, []string{"service", "method", "type", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: "agent", Name: "rpc_duration_seconds",
			Help:    "Time from the start of a gRPC call to its end (a stream's whole life).",
			Buckets: rpcBuckets,
		}, base),
		recv: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "agent", Name: "rpc_stream_messages_received_total",
			Help: "Messages the agent received on streaming calls.",
		}, base),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: "agent", Name: "rpc_stream_messages_sent_total",
			Help: "Messages the agent sent on streaming calls.",
		}, base),
	}
}

func (m *rpcMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.started, m.handled, m.duration, m.recv, m.sent}
}

// splitMethod turns "/pkg.Service/Method" into ("pkg.Service", "Method").
func splitMethod(full string) (string, string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndex(full, "/"); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}

func streamType(info *grpc.StreamServerInfo) string {
	switch {
	case info.IsClientStream && info.IsServerStream:
		return "bidi_stream"
	case info.IsClientStream:
		return "client_stream"
	default:
		return "server_stream"
	}
}

// RPCInterceptors returns the server interceptors that record every call:
// install them first in the chain (grpc.ChainUnaryInterceptor and
// grpc.ChainStreamInterceptor) so the code they see is the one the client
// gets.
func (e *Exporter) RPCInterceptors() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	m := e.rpc
	unary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		svc, meth := splitMethod(info.FullMethod)
		m.started.WithLabelValues(svc, meth, "unary").Inc()
		begin := time.Now()
		resp, err := handler(ctx, req)
		m.done(svc, meth, "unary", begin, err)
		return resp, err
	}
	stream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		svc, meth := splitMethod(info.FullMethod)
		typ := streamType(info)
		m.started.WithLabelValues(svc, meth, typ).Inc()
		begin := time.Now()
		err := handler(srv, &countingStream{
			ServerStream: ss,
			recv:         m.recv.WithLabelValues(svc, meth, typ),
			sent:         m.sent.WithLabelValues(svc, meth, typ),
		})
		m.done(svc, meth, typ, begin, err)
		return err
	}
	return unary, stream
}

func (m *rpcMetrics) done(svc, meth, typ string, begin time.Time, err error) {
	m.handled.WithLabelValues(svc, meth, typ, status.Code(err).String()).Inc()
	m.duration.WithLabelValues(svc, meth, typ).Observe(time.Since(begin).Seconds())
}

// countingStream counts the messages that really went through.
type countingStream struct {
	grpc.ServerStream
	recv, sent prometheus.Counter
}

func (s *countingStream) RecvMsg(msg any) error {
	err := s.ServerStream.RecvMsg(msg)
	if err == nil {
		s.recv.Inc()
	}
	return err
}

func (s *countingStream) SendMsg(msg any) error {
	err := s.ServerStream.SendMsg(msg)
	if err == nil {
		s.sent.Inc()
	}
	return err
}
