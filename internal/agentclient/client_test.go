package agentclient

// Tests of the client itself over real gRPC with mTLS on loopback. The
// server is a small scripted HostAgentService (the real agent's behaviour
// is covered by tests/integration/cp_*_test.go); what matters here is the
// error translation at this edge and the streaming plumbing.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/wrenn-dev/wrenn-sandbox/internal/config"
	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

type scripted struct {
	pb.UnimplementedHostAgentServiceServer
	err   error      // returned by every unary call when set
	files []byte     // last WriteFile body
	inv   *inventory // ListSandboxes, and DestroySandbox removes from it, when set
}

func (s *scripted) DestroySandbox(ctx context.Context, r *pb.DestroySandboxRequest) (*pb.DestroySandboxResponse, error) {
	if s.inv != nil {
		return &pb.DestroySandboxResponse{}, s.inv.destroy(r.GetSandboxId())
	}
	return &pb.DestroySandboxResponse{}, s.err
}

func (s *scripted) ListSandboxes(ctx context.Context, r *pb.ListSandboxesRequest) (*pb.ListSandboxesResponse, error) {
	if s.inv == nil {
		return nil, status.Error(codes.Unimplemented, "no inventory")
	}
	return &pb.ListSandboxesResponse{Sandboxes: s.inv.list()}, nil
}

func (s *scripted) Heartbeat(ctx context.Context, r *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	if s.inv != nil && s.inv.down() {
		return nil, status.Error(codes.Unavailable, "agent restarting")
	}
	return &pb.HeartbeatResponse{HostId: "host-test", Driver: "qemu",
		Capacity: &pb.Capacity{TotalVcpus: 8, TotalMemoryMb: 4096, UsedMemoryMb: 512}}, nil
}

func (s *scripted) WriteFile(st grpc.ClientStreamingServer[pb.WriteFileRequest, pb.WriteFileResponse]) error {
	first, err := st.Recv()
	if err != nil {
		return err
	}
	if first.GetHeader().GetPath() == "/denied" {
		return status.Error(codes.PermissionDenied, "read-only")
	}
	var buf bytes.Buffer
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		buf.Write(m.GetChunk())
	}
	s.files = buf.Bytes()
	return st.SendAndClose(&pb.WriteFileResponse{Path: first.GetHeader().GetPath(), BytesWritten: int64(buf.Len())})
}

func (s *scripted) ReadFile(r *pb.ReadFileRequest, st grpc.ServerStreamingServer[pb.ReadFileResponse]) error {
	if r.GetPath() == "/missing" {
		return status.Error(codes.NotFound, "no such file")
	}
	for i, c := range [][]byte{[]byte("ab"), []byte("cd")} {
		m := &pb.ReadFileResponse{Chunk: c}
		if i == 0 {
			m.Size = 4
		}
		if err := st.Send(m); err != nil {
			return err
		}
	}
	return nil
}

func start(t *testing.T, srv *scripted) *testClient {
	t.Helper()
	certs, err := config.WriteDevCerts(filepath.Join(t.TempDir(), "certs"), nil)
	if err != nil {
		t.Fatal(err)
	}
	stls, err := config.ServerTLS(certs.Server)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(stls)))
	pb.RegisterHostAgentServiceServer(g, srv)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	ctls, err := config.ClientTLS(certs.Client, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Dial(ln.Addr().String(), ctls)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &testClient{Client: c, tlsForTest: ctls, stopServer: g.Stop}
}

// testClient is a Client plus what the tests need of its server.
type testClient struct {
	*Client
	tlsForTest *tls.Config
	stopServer func()
}

func TestErrorMapping(t *testing.T) {
	srv := &scripted{}
	c := start(t, srv)
	tests := []struct {
		code codes.Code
		want error
	}{
		{codes.NotFound, errdefs.ErrNotFound},
		{codes.FailedPrecondition, errdefs.ErrConflict},
		{codes.ResourceExhausted, errdefs.ErrResourceExhausted},
		{codes.Unavailable, errdefs.ErrUnavailable},
		{codes.InvalidArgument, errdefs.ErrInvalidArgument},
		{codes.DeadlineExceeded, errdefs.ErrDeadlineExceeded},
		{codes.Internal, errdefs.ErrInternal},
	}
	for _, tc := range tests {
		srv.err = status.Error(tc.code, "because")
		err := c.DestroySandbox(context.Background(), "sb-00000001")
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), "because") {
			t.Errorf("%s: got %v, want %v", tc.code, err, tc.want)
		}
	}
	srv.err = nil
	if err := c.DestroySandbox(context.Background(), "sb-00000001"); err != nil {
		t.Fatal(err)
	}
}

func TestStreams(t *testing.T) {
	srv := &scripted{}
	c := start(t, srv)
	ctx := context.Background()
	info, err := c.Heartbeat(ctx)
	if err != nil || info.HostID != "host-test" || info.Capacity.TotalMemoryMB != 4096 || info.Capacity.UsedMemoryMB != 512 {
		t.Fatalf("heartbeat %+v %v", info, err)
	}
	body := bytes.Repeat([]byte("x"), 3*chunkSize+7)
	r, err := c.WriteFile(ctx, &pb.WriteFileHeader{SandboxId: "sb-00000001", Path: "/f"}, bytes.NewReader(body))
	if err != nil || r.GetBytesWritten() != int64(len(body)) || !bytes.Equal(srv.files, body) {
		t.Fatalf("write: %v %v", r, err)
	}
	_, err = c.WriteFile(ctx, &pb.WriteFileHeader{SandboxId: "sb-00000001", Path: "/denied"}, bytes.NewReader(body))
	if !errors.Is(err, errdefs.ErrPermissionDenied) {
		t.Fatalf("denied write: %v", err)
	}
	readErr := errors.New("client went away")
	_, err = c.WriteFile(ctx, &pb.WriteFileHeader{SandboxId: "sb-00000001", Path: "/f"}, io.MultiReader(bytes.NewReader(body[:10]), errReader{readErr}))
	if !errors.Is(err, readErr) {
		t.Fatalf("failing body: %v", err)
	}
	var out bytes.Buffer
	var size int64 = -2
	n, err := c.ReadFile(ctx, &pb.ReadFileRequest{Path: "/f"}, func(s int64) error { size = s; return nil }, &out)
	if err != nil || n != 4 || size != 4 || out.String() != "abcd" {
		t.Fatalf("read: %d %d %q %v", n, size, out.String(), err)
	}
	called := false
	_, err = c.ReadFile(ctx, &pb.ReadFileRequest{Path: "/missing"}, func(int64) error { called = true; return nil }, &out)
	if !errors.Is(err, errdefs.ErrNotFound) || called {
		t.Fatalf("missing: %v (first called: %v)", err, called)
	}
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
