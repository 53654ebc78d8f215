package metrics

import (
	"context"
	"net"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// TestRPCInterceptors drives the real gRPC health service over a TCP
// socket on loopback through the interceptors and scrapes the result.
func TestRPCInterceptors(t *testing.T) {
	e, err := NewExporter(ExporterConfig{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	unary, stream := e.RPCInterceptors()
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(unary), grpc.ChainStreamInterceptor(stream))
	hs := health.NewServer()
	hs.SetServingStatus("svc-a", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := healthpb.NewHealthClient(conn)
	ctx := context.Background()

	for range 3 {
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "svc-a"}); err != nil {
			t.Fatalf("Check: %v", err)
		}
	}
	for range 2 {
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("Check(nope) = %v, want NotFound", err)
		}
	}
	// A server stream: two updates, then the client goes away.
	wctx, cancel := context.WithCancel(ctx)
	w, err := client.Watch(wctx, &healthpb.HealthCheckRequest{Service: "svc-a"})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := w.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first Watch message %v, %v", m, err)
	}
	hs.SetServingStatus("svc-a", healthpb.HealthCheckResponse_NOT_SERVING)
	if m, err := w.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("second Watch message %v, %v", m, err)
	}
	cancel()

	url := serve(t, e.Handler())
	watch := map[string]string{"service": "grpc.health.v1.Health", "method": "Watch", "type": "server_stream"}
	// The server sees the cancellation a moment after the client.
	var fams map[string]*dto.MetricFamily
	deadline := time.Now().Add(5 * time.Second)
	for {
		fams = scrape(t, url)
		if _, ok := value(fams, "wrenn_agent_rpc_handled_total", with(watch, "code", "Canceled")); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Watch never recorded as finished")
		}
		time.Sleep(20 * time.Millisecond)
	}

	check := map[string]string{"service": "grpc.health.v1.Health", "method": "Check", "type": "unary"}
	want := []struct {
		name   string
		labels map[string]string
		value  float64
	}{
		{"wrenn_agent_rpc_started_total", check, 5},
		{"wrenn_agent_rpc_handled_total", with(check, "code", "OK"), 3},
		{"wrenn_agent_rpc_handled_total", with(check, "code", "NotFound"), 2},
		{"wrenn_agent_rpc_started_total", watch, 1},
		{"wrenn_agent_rpc_handled_total", with(watch, "code", "Canceled"), 1},
		{"wrenn_agent_rpc_stream_messages_sent_total", watch, 2},
		{"wrenn_agent_rpc_stream_messages_received_total", watch, 1},
	}
	for _, w := range want {
		if got := mustValue(t, fams, w.name, w.labels); got != w.value {
			t.Errorf("%s%v = %v, want %v", w.name, w.labels, got, w.value)
		}
	}
	hist, typ, ok := series(fams, "wrenn_agent_rpc_duration_seconds", check)
	if !ok || typ != dto.MetricType_HISTOGRAM {
		t.Fatalf("latency histogram for Check: present %v, type %v", ok, typ)
	}
	h := hist.GetHistogram()
	if h.GetSampleCount() != 5 || h.GetSampleSum() <= 0 {
		t.Errorf("Check latency: %d samples, sum %v; want 5 and > 0", h.GetSampleCount(), h.GetSampleSum())
	}
	if len(h.GetBucket()) != len(rpcBuckets)+1 { // the exposition adds +Inf
		t.Errorf("%d buckets, want %d", len(h.GetBucket()), len(rpcBuckets)+1)
	}
	if _, _, ok := series(fams, "wrenn_agent_rpc_duration_seconds", watch); !ok {
		t.Error("no latency histogram for Watch")
	}
}

func with(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for a, b := range m {
		out[a] = b
	}
	return out
}

func TestSplitMethod(t *testing.T) {
	cases := []struct{ in, svc, meth string }{
		{"/grpc.health.v1.Health/Check", "grpc.health.v1.Health", "Check"},
		{"/wrenn.hostagent.v1.HostAgent/Exec", "wrenn.hostagent.v1.HostAgent", "Exec"},
		{"weird", "unknown", "weird"},
	}
	for _, c := range cases {
		if s, m := splitMethod(c.in); s != c.svc || m != c.meth {
			t.Errorf("splitMethod(%q) = %q, %q; want %q, %q", c.in, s, m, c.svc, c.meth)
		}
	}
}
