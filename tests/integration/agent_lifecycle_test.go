package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/wrenn-dev/wrenn-sandbox/internal/config"
	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

func wantCode(t testing.TB, err error, code codes.Code, what string) {
	t.Helper()
	if got := status.Code(err); got != code {
		t.Fatalf("%s: got %v (%v), want %v", what, got, err, code)
	}
}

// TestAgentLifecycle drives one agent over mTLS through every RPC on
// real QEMU VMs: create (and its idempotent repeat), exec, files,
// terminal, pause, resume, snapshot, rollback, fork, hibernate, wake and
// destroy, and checks that nothing is left afterwards.
func TestAgentLifecycle(t *testing.T) {
	e := newAgentEnv(t)
	before := e.resources()
	a := e.startInProcess(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	sid := id.NewSandboxID()
	start := time.Now()
	sb := a.create(ctx, &pb.CreateSandboxRequest{SandboxId: sid, Template: "minimal", MemoryMb: 256,
		Envs: map[string]string{"WRENN_TEST": "yes"}, Metadata: map[string]string{"owner": "t"}})
	t.Logf("created %s in %s (boot %s)", sid, time.Since(start), sb.GetBootMode())
	if sb.GetState() != pb.SandboxState_SANDBOX_STATE_RUNNING || sb.GetGuestIp() == "" || sb.GetMetadata()["owner"] != "t" {
		t.Fatalf("created sandbox: %+v", sb)
	}

	t.Run("idempotent create", func(t *testing.T) {
		again, err := a.c.CreateSandbox(ctx, &pb.CreateSandboxRequest{SandboxId: sid, Template: "minimal", MemoryMb: 256})
		if err != nil {
			t.Fatal(err)
		}
		if !again.GetSandbox().GetCreatedAt().AsTime().Equal(sb.GetCreatedAt().AsTime()) {
			t.Fatal("a repeated create made a new sandbox")
		}
		_, err = a.c.CreateSandbox(ctx, &pb.CreateSandboxRequest{SandboxId: sid, Template: "minimal", MemoryMb: 512})
		wantCode(t, err, codes.AlreadyExists, "create with another shape")
		_, err = a.c.CreateSandbox(ctx, &pb.CreateSandboxRequest{SandboxId: id.NewSandboxID(), Template: "nope"})
		wantCode(t, err, codes.NotFound, "unknown template")
		_, err = a.c.CreateSandbox(ctx, &pb.CreateSandboxRequest{SandboxId: "sandbox-1"})
		wantCode(t, err, codes.InvalidArgument, "bad id")
		_, err = a.c.GetSandbox(ctx, &pb.GetSandboxRequest{SandboxId: id.NewSandboxID()})
		wantCode(t, err, codes.NotFound, "get unknown")
	})

	t.Run("exec", func(t *testing.T) {
		r, err := a.exec(ctx, sid, "echo", "hello")
		if err != nil {
			t.Fatal(err)
		}
		if r.Stdout != "hello\n" || r.Exit.GetExitCode() != 0 || !r.Exit.GetExited() || r.Pid == 0 {
			t.Fatalf("echo hello: %+v", r)
		}
		r, err = a.exec(ctx, sid, "/bin/sh", "-c", "echo out; echo err >&2; echo $WRENN_TEST; hostname; exit 3")
		if err != nil {
			t.Fatal(err)
		}
		if r.Stdout != "out\nyes\n"+sid+"\n" || r.Stderr != "err\n" || r.Exit.GetExitCode() != 3 {
			t.Fatalf("script: %+v", r)
		}
		// stdin, and a timeout that kills.
		st, err := a.c.Exec(ctx, &pb.ExecRequest{SandboxId: sid, Cmd: "cat", Stdin: []byte("from stdin")})
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		for {
			m, err := st.Recv()
			if err != nil {
				break
			}
			got = append(got, m.GetStdout()...)
		}
		if string(got) != "from stdin" {
			t.Fatalf("stdin: got %q", got)
		}
		st, err = a.c.Exec(ctx, &pb.ExecRequest{SandboxId: sid, Cmd: "sleep", Args: []string{"30"}, Timeout: durationpbNew(500 * time.Millisecond)})
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		for {
			if _, err := st.Recv(); err != nil {
				break
			}
		}
		if time.Since(t0) > 10*time.Second {
			t.Fatal("exec timeout did not end the command")
		}
		_, err = a.exec(ctx, sid, "/no/such/binary")
		if status.Code(err) == codes.OK {
			t.Fatal("exec of a missing binary succeeded")
		}
	})

	t.Run("files", func(t *testing.T) {
		big := make([]byte, 3<<20+12345)
		_, _ = rand.Read(big)
		path := "/tmp/wrenn/big.bin"
		w, err := a.c.WriteFile(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Send(&pb.WriteFileRequest{Msg: &pb.WriteFileRequest_Header{Header: &pb.WriteFileHeader{
			SandboxId: sid, Path: path, Mode: 0o640, Size: int64(len(big))}}}); err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(big); off += 1 << 20 {
			end := min(off+1<<20, len(big))
			if err := w.Send(&pb.WriteFileRequest{Msg: &pb.WriteFileRequest_Chunk{Chunk: big[off:end]}}); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := w.CloseAndRecv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetPath() != path || resp.GetBytesWritten() != int64(len(big)) {
			t.Fatalf("write reply %+v", resp)
		}
		sum := sha256.Sum256(big)
		out := a.sh(ctx, sid, "sha256sum "+path+" | cut -d' ' -f1; stat -c %a "+path+"; ls -a /tmp/wrenn")
		lines := strings.Fields(out)
		if len(lines) < 2 || lines[0] != hexString(sum[:]) || lines[1] != "640" {
			t.Fatalf("guest sees %q", out)
		}
		if strings.Contains(out, ".wrenn-upload") {
			t.Fatalf("temporary upload left behind: %q", out)
		}
		// Read it back.
		rd, err := a.c.ReadFile(ctx, &pb.ReadFileRequest{SandboxId: sid, Path: path})
		if err != nil {
			t.Fatal(err)
		}
		var back bytes.Buffer
		first := true
		for {
			m, err := rd.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if first && m.GetSize() != int64(len(big)) {
				t.Fatalf("size in first message %d", m.GetSize())
			}
			first = false
			back.Write(m.GetChunk())
		}
		if !bytes.Equal(back.Bytes(), big) {
			t.Fatalf("read back %d bytes, not what was written", back.Len())
		}
		// A short stream is refused and leaves the old file in place.
		w, _ = a.c.WriteFile(ctx)
		_ = w.Send(&pb.WriteFileRequest{Msg: &pb.WriteFileRequest_Header{Header: &pb.WriteFileHeader{SandboxId: sid, Path: path, Size: 100}}})
		_ = w.Send(&pb.WriteFileRequest{Msg: &pb.WriteFileRequest_Chunk{Chunk: []byte("short")}})
		_, err = w.CloseAndRecv()
		wantCode(t, err, codes.InvalidArgument, "short upload")
		if got := a.sh(ctx, sid, "wc -c < "+path); strings.TrimSpace(got) != itoa(len(big)) {
			t.Fatalf("a failed upload changed the file: size %s", got)
		}
		_, err = recvAll(a.c.ReadFile(ctx, &pb.ReadFileRequest{SandboxId: sid, Path: "/no/such/file"}))
		wantCode(t, err, codes.NotFound, "read missing file")
	})

	t.Run("terminal", func(t *testing.T) {
		term, err := a.c.Terminal(ctx)
		if err != nil {
			t.Fatal(err)
		}
		send := func(r *pb.TerminalRequest) {
			if err := term.Send(r); err != nil {
				t.Fatal(err)
			}
		}
		send(&pb.TerminalRequest{Event: &pb.TerminalRequest_Start{Start: &pb.TerminalStart{SandboxId: sid, Size: &pb.TerminalSize{Cols: 80, Rows: 24}}}})
		m, err := term.Recv()
		if err != nil || m.GetStarted().GetPid() == 0 {
			t.Fatalf("terminal start: %v %v", m, err)
		}
		send(&pb.TerminalRequest{Event: &pb.TerminalRequest_Resize{Resize: &pb.TerminalSize{Cols: 132, Rows: 43}}})
		send(&pb.TerminalRequest{Event: &pb.TerminalRequest_Input{Input: []byte("echo hi; stty size; exit 7\n")}})
		var out bytes.Buffer
		var exit *pb.TerminalExit
		for exit == nil {
			m, err := term.Recv()
			if err != nil {
				t.Fatalf("terminal: %v (output so far %q)", err, out.String())
			}
			out.Write(m.GetOutput())
			exit = m.GetExit()
		}
		if !strings.Contains(out.String(), "hi\r\n") || !strings.Contains(out.String(), "43 132") {
			t.Fatalf("terminal output %q", out.String())
		}
		if exit.GetExitCode() != 7 {
			t.Fatalf("terminal exit %+v", exit)
		}
		// Closing the stream ends the session's process.
		term, _ = a.c.Terminal(ctx)
		_ = term.Send(&pb.TerminalRequest{Event: &pb.TerminalRequest_Start{Start: &pb.TerminalStart{SandboxId: sid, Cmd: "sleep", Args: []string{"300"}}}})
		m, err = term.Recv()
		if err != nil {
			t.Fatal(err)
		}
		pid := m.GetStarted().GetPid()
		_ = term.CloseSend()
		for {
			if _, err := term.Recv(); err != nil {
				break
			}
		}
		if out := a.sh(ctx, sid, "test -e /proc/"+itoa(int(pid))+" && echo alive || echo gone"); strings.TrimSpace(out) != "gone" {
			t.Fatalf("terminal process %d survived its stream", pid)
		}
	})

	t.Run("pause resume", func(t *testing.T) {
		p, err := a.c.PauseSandbox(ctx, &pb.PauseSandboxRequest{SandboxId: sid})
		if err != nil || p.GetSandbox().GetState() != pb.SandboxState_SANDBOX_STATE_PAUSED {
			t.Fatalf("pause: %v %v", p, err)
		}
		if _, err := a.c.PauseSandbox(ctx, &pb.PauseSandboxRequest{SandboxId: sid}); err != nil {
			t.Fatalf("second pause: %v", err)
		}
		_, err = a.exec(ctx, sid, "true")
		wantCode(t, err, codes.FailedPrecondition, "exec while paused")
		r, err := a.c.ResumeSandbox(ctx, &pb.ResumeSandboxRequest{SandboxId: sid})
		if err != nil || r.GetSandbox().GetState() != pb.SandboxState_SANDBOX_STATE_RUNNING {
			t.Fatalf("resume: %v %v", r, err)
		}
		if _, err := a.c.ResumeSandbox(ctx, &pb.ResumeSandboxRequest{SandboxId: sid}); err != nil {
			t.Fatalf("second resume: %v", err)
		}
		if out := a.sh(ctx, sid, "echo back"); out != "back\n" {
			t.Fatalf("after resume: %q", out)
		}
	})

	snapID := id.NewSnapshotID()
	var forkID string
	t.Run("snapshot rollback fork", func(t *testing.T) {
		a.sh(ctx, sid, "echo before > /root/state")
		s, err := a.c.SnapshotSandbox(ctx, &pb.SnapshotSandboxRequest{SandboxId: sid, SnapshotId: snapID})
		if err != nil {
			t.Fatal(err)
		}
		if s.GetSnapshot().GetMemBytes() == 0 || !strings.HasPrefix(s.GetSnapshot().GetLocation(), "local:") {
			t.Fatalf("snapshot %+v", s.GetSnapshot())
		}
		again, err := a.c.SnapshotSandbox(ctx, &pb.SnapshotSandboxRequest{SandboxId: sid, SnapshotId: snapID})
		if err != nil || !again.GetSnapshot().GetCreatedAt().AsTime().Equal(s.GetSnapshot().GetCreatedAt().AsTime()) {
			t.Fatalf("repeated snapshot: %v %v", again, err)
		}
		// The sandbox keeps running after a snapshot.
		a.sh(ctx, sid, "echo after > /root/state")
		// Roll back: the file is as it was when the snapshot was taken.
		rb, err := a.c.RestoreSandbox(ctx, &pb.RestoreSandboxRequest{SandboxId: sid, SnapshotId: snapID})
		if err != nil {
			t.Fatal(err)
		}
		if rb.GetSandbox().GetState() != pb.SandboxState_SANDBOX_STATE_RUNNING {
			t.Fatalf("rolled back: %+v", rb.GetSandbox())
		}
		if out := a.sh(ctx, sid, "cat /root/state"); out != "before\n" {
			t.Fatalf("after rollback /root/state = %q", out)
		}
		// Fork a second sandbox from the snapshot.
		forkID = id.NewSandboxID()
		fk, err := a.c.RestoreSandbox(ctx, &pb.RestoreSandboxRequest{SandboxId: forkID, SnapshotId: snapID})
		if err != nil {
			t.Fatal(err)
		}
		if fk.GetEnvdAccessToken() == "" || fk.GetSandbox().GetSandboxId() != forkID {
			t.Fatalf("fork: %+v", fk)
		}
		if out := a.sh(ctx, forkID, "cat /root/state; hostname"); out != "before\n"+forkID+"\n" {
			t.Fatalf("fork sees %q", out)
		}
		ls, err := a.c.ListSnapshots(ctx, &pb.ListSnapshotsRequest{SandboxId: sid})
		if err != nil || len(ls.GetSnapshots()) != 1 {
			t.Fatalf("list snapshots: %v %v", ls, err)
		}
	})

	t.Run("hibernate wake", func(t *testing.T) {
		a.sh(ctx, sid, "echo hibernated > /root/h")
		h, err := a.c.HibernateSandbox(ctx, &pb.HibernateSandboxRequest{SandboxId: sid})
		if err != nil {
			t.Fatal(err)
		}
		if h.GetSandbox().GetState() != pb.SandboxState_SANDBOX_STATE_HIBERNATED || !h.GetSnapshot().GetHibernation() {
			t.Fatalf("hibernate: %+v", h)
		}
		hb, err := a.c.Heartbeat(ctx, &pb.HeartbeatRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if hb.GetSandboxesByState()["hibernated"] != 1 || hb.GetCapacity().GetUsedMemoryMb() != 256 {
			t.Fatalf("heartbeat while hibernated: %+v", hb)
		}
		_, err = a.c.DeleteSnapshot(ctx, &pb.DeleteSnapshotRequest{SnapshotId: h.GetSnapshot().GetSnapshotId()})
		wantCode(t, err, codes.FailedPrecondition, "delete a hibernation snapshot")
		_, err = a.exec(ctx, sid, "true")
		wantCode(t, err, codes.FailedPrecondition, "exec while hibernated")
		w, err := a.c.RestoreSandbox(ctx, &pb.RestoreSandboxRequest{SandboxId: sid})
		if err != nil {
			t.Fatal(err)
		}
		if w.GetSandbox().GetState() != pb.SandboxState_SANDBOX_STATE_RUNNING {
			t.Fatalf("wake: %+v", w.GetSandbox())
		}
		if out := a.sh(ctx, sid, "cat /root/h /root/state"); out != "hibernated\nbefore\n" {
			t.Fatalf("after wake: %q", out)
		}
	})

	t.Run("metrics heartbeat", func(t *testing.T) {
		m, err := a.c.GetMetrics(ctx, &pb.GetMetricsRequest{SandboxId: sid})
		if err != nil || len(m.GetSandboxes()) != 1 {
			t.Fatalf("metrics: %v %v", m, err)
		}
		s := m.GetSandboxes()[0]
		if s.GetDiskBytes() == 0 || s.GetVmmPid() == 0 {
			t.Fatalf("metrics %+v", s)
		}
		resp, err := http.Get("http://" + a.metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{`wrenn_sandbox_memory_bytes{sandbox_id="` + sid + `"}`, `wrenn_sandbox_disk_bytes{sandbox_id="` + sid + `"}`,
			`wrenn_agent_rpc_handled_total{`, `method="CreateSandbox"`} {
			if !strings.Contains(string(body), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		hc, err := healthpb.NewHealthClient(a.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "hostagent.HostAgentService"})
		if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health: %v %v", hc, err)
		}
		hb, err := a.c.Heartbeat(ctx, &pb.HeartbeatRequest{})
		if err != nil {
			t.Fatal(err)
		}
		c := hb.GetCapacity()
		if hb.GetHostId() != "host-it" || hb.GetDriver() != "qemu" || c.GetSandboxCount() != 2 ||
			c.GetUsedVcpus() != 2 || c.GetUsedMemoryMb() != 512 || c.GetTotalMemoryMb() != 8192 {
			t.Fatalf("heartbeat %+v", hb)
		}
	})

	t.Run("destroy", func(t *testing.T) {
		for _, s := range []string{sid, forkID} {
			if _, err := a.c.DestroySandbox(ctx, &pb.DestroySandboxRequest{SandboxId: s}); err != nil {
				t.Fatal(err)
			}
			if _, err := a.c.DestroySandbox(ctx, &pb.DestroySandboxRequest{SandboxId: s}); err != nil {
				t.Fatalf("second destroy: %v", err)
			}
		}
		if l := a.list(ctx); len(l) != 0 {
			t.Fatalf("left after destroy: %v", l)
		}
		if _, err := a.c.DeleteSnapshot(ctx, &pb.DeleteSnapshotRequest{SnapshotId: snapID}); err != nil {
			t.Fatal(err)
		}
	})
	a.stop()
	e.assertSameResources(t, before)
}

// TestAgentRefusesClientsWithoutValidCertificate checks mTLS: no client
// certificate, or one from another CA, gets no answer.
func TestAgentRefusesClientsWithoutValidCertificate(t *testing.T) {
	e := newAgentEnv(t)
	a := e.startInProcess(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := a.c.Heartbeat(ctx, &pb.HeartbeatRequest{}); err != nil {
		t.Fatalf("the dev client is refused: %v", err)
	}
	good, err := config.ClientTLS(e.certs.Client, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	rogueCA, _ := config.NewCA("rogue")
	leaf, _ := rogueCA.Issue("intruder", nil, true)
	rogueCert, _ := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	rogue := good.Clone()
	rogue.Certificates = []tls.Certificate{rogueCert}
	anon := good.Clone()
	anon.Certificates = nil
	for name, cfg := range map[string]*tls.Config{"no certificate": anon, "other CA": rogue} {
		conn, err := grpc.NewClient(a.addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = pb.NewHostAgentServiceClient(conn).Heartbeat(cctx, &pb.HeartbeatRequest{})
		ccancel()
		conn.Close()
		if err == nil {
			t.Fatalf("%s: the agent answered", name)
		}
		if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
			t.Fatalf("%s: unexpected code %v (%v)", name, c, err)
		}
		t.Logf("%s: refused: %v", name, err)
	}
	// Plain text is refused too.
	conn, err := grpc.NewClient(a.addr, grpc.WithTransportCredentials(insecureCreds()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
	defer ccancel()
	if _, err := pb.NewHostAgentServiceClient(conn).Heartbeat(cctx, &pb.HeartbeatRequest{}); err == nil {
		t.Fatal("a plaintext client got an answer")
	}
}

func recvAll[T any](s interface{ Recv() (T, error) }, err error) ([]T, error) {
	if err != nil {
		return nil, err
	}
	var out []T
	for {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}
