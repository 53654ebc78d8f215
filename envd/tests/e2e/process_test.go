package e2e

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"

	pb "github.com/wrenn-dev/envd/internal/gen/process"
)

func TestProcessAllProtocols(t *testing.T) {
	e := startEnvd(t)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			ctx := ctxT(t, 20*time.Second)
			pc := processFor(e, p.client(), p.opts)
			r := run(t, ctx, pc, sh("echo out; echo err >&2; exit 3"))
			if r.stdout.String() != "out\n" || r.stderr.String() != "err\n" {
				t.Fatalf("stdout %q stderr %q", r.stdout.String(), r.stderr.String())
			}
			if r.end.GetExitCode() != 3 || !r.end.GetExited() {
				t.Fatalf("end = %v", r.end)
			}
			if _, err := pc.List(ctx, connect.NewRequest(&pb.ListRequest{})); err != nil {
				t.Fatalf("list: %v", err)
			}
		})
	}
}

func TestProcessOutputBytes(t *testing.T) {
	e := startEnvd(t)
	ctx := ctxT(t, 30*time.Second)
	pc := e.process()

	// Every byte value survives, in order, beyond one 32 KiB chunk.
	r := run(t, ctx, pc, sh(`i=0; while [ $i -lt 200 ]; do printf '\000\001\377\200abc'; i=$((i+1)); done; head -c 100000 /dev/zero`))
	want := append(bytes.Repeat([]byte("\x00\x01\xff\x80abc"), 200), make([]byte, 100000)...)
	if !bytes.Equal(r.stdout.Bytes(), want) {
		t.Fatalf("binary output: got %d bytes, want %d", r.stdout.Len(), len(want))
	}
	r = run(t, ctx, pc, sh(`printf 'héllo wörld ✓ 日本\n'`))
	if got := r.stdout.String(); got != "héllo wörld ✓ 日本\n" || !utf8.ValidString(got) {
		t.Fatalf("utf-8 output %q", got)
	}
}

func TestProcessEnvCwdUser(t *testing.T) {
	e := startEnvd(t)
	ctx := ctxT(t, 20*time.Second)
	pc := e.process()

	req := sh(`echo "$FOO|$PWD|$HOME|$(id -u)"`)
	req.Msg.Process.Envs = map[string]string{"FOO": "bar"}
	cwd := t.TempDir()
	req.Msg.Process.Cwd = &cwd
	r := run(t, ctx, pc, req)
	if got, want := r.stdout.String(), fmt.Sprintf("bar|%s|/root|0\n", cwd); got != want {
		t.Fatalf("got %q want %q", got, want)
	}

	r = run(t, ctx, pc, asUser(sh(`id -u`), "nobody"))
	if strings.TrimSpace(r.stdout.String()) != "65534" {
		t.Fatalf("nobody ran as uid %q", r.stdout.String())
	}

	_, err := pc.Start(ctx, asUser(sh("true"), "no-such-user"))
	if err == nil {
		s, _ := pc.Start(ctx, asUser(sh("true"), "no-such-user"))
		for s.Receive() {
		}
		err = s.Err()
	}
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("unknown user: %v", err)
	}

	bad := "/no/such/dir"
	req = sh("true")
	req.Msg.Process.Cwd = &bad
	if err := startErr(ctx, pc, req); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("missing cwd: %v", err)
	}
	if err := startErr(ctx, pc, startReq("/no/such/binary")); err == nil {
		t.Fatal("missing binary accepted")
	}
}

// startErr returns the error a Start call ends with, whether it comes from
// the call itself or from the stream.
func startErr(ctx context.Context, pc interface {
	Start(context.Context, *connect.Request[pb.StartRequest]) (*connect.ServerStreamForClient[pb.StartResponse], error)
}, req *connect.Request[pb.StartRequest]) error {
	s, err := pc.Start(ctx, req)
	if err != nil {
		return err
	}
	defer s.Close()
	for s.Receive() {
	}
	return s.Err()
}

func TestProcessStdinAndSignals(t *testing.T) {
	e := startEnvd(t)
	ctx := ctxT(t, 30*time.Second)
	pc := e.process()

	yes := true
	req := startReq("cat")
	req.Msg.Stdin = &yes
	req.Msg.Tag = ptr("cat-1")
	s := must(pc.Start(ctx, req))
	defer s.Close()
	if !s.Receive() || s.Msg().GetEvent().GetStart() == nil {
		t.Fatalf("no start event: %v", s.Err())
	}
	catPID := s.Msg().GetEvent().GetStart().GetPid()
	tag := &pb.ProcessSelector{Selector: &pb.ProcessSelector_Tag{Tag: "cat-1"}}
	must(pc.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{
		Process: tag, Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte("one\n")}},
	})))
	in := pc.StreamInput(ctx)
	must(0, in.Send(&pb.StreamInputRequest{Event: &pb.StreamInputRequest_Start{Start: &pb.StreamInputRequest_StartEvent{Process: tag}}}))
	must(0, in.Send(&pb.StreamInputRequest{Event: &pb.StreamInputRequest_Data{Data: &pb.StreamInputRequest_DataEvent{
		Input: &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte("two\n")}}}}}))
	must(in.CloseAndReceive())
	must(pc.CloseStdin(ctx, connect.NewRequest(&pb.CloseStdinRequest{Process: tag})))
	r := collectRest(t, catPID, s.Receive, func() *pb.ProcessEvent { return s.Msg().GetEvent() }, s.Err)
	if r.stdout.String() != "one\ntwo\n" || r.end.GetExitCode() != 0 {
		t.Fatalf("cat: %q %v", r.stdout.String(), r.end)
	}

	// SIGTERM reaches the whole group: the grandchild dies too.
	dir := t.TempDir()
	s2 := must(pc.Start(ctx, sh(fmt.Sprintf("sleep 300 & echo $! > %s/child; wait", dir))))
	defer s2.Close()
	s2.Receive()
	pid := s2.Msg().GetEvent().GetStart().GetPid()
	child := waitFile(t, dir+"/child")
	must(pc.SendSignal(ctx, connect.NewRequest(&pb.SendSignalRequest{Process: byPID(pid), Signal: pb.Signal_SIGNAL_SIGTERM})))
	for s2.Receive() {
	}
	// The shell's end does not mean the grandchild is gone yet: it may not
	// have run to take the signal, and once dead it is a zombie (which
	// kill -0 still finds) until envd, its new parent, reaps it. So poll;
	// a sleep the signal missed stays for its 300 s.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r = run(t, ctx, pc, sh("kill -0 "+child+" 2>/dev/null && echo alive || echo gone"))
		if strings.TrimSpace(r.stdout.String()) == "gone" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("grandchild survived SIGTERM of its group")
		}
		time.Sleep(20 * time.Millisecond)
	}

	if _, err := pc.SendSignal(ctx, connect.NewRequest(&pb.SendSignalRequest{Process: byPID(999999), Signal: pb.Signal_SIGNAL_SIGKILL})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("unknown pid: %v", err)
	}
}

func TestProcessPTY(t *testing.T) {
	e := startEnvd(t)
	ctx := ctxT(t, 30*time.Second)
	pc := e.process()
	yes := true
	req := startReq("/bin/sh")
	req.Msg.Stdin = &yes
	req.Msg.Pty = &pb.PTY{Size: &pb.PTY_Size{Cols: 80, Rows: 24}}
	s := must(pc.Start(ctx, req))
	defer s.Close()
	s.Receive()
	pid := s.Msg().GetEvent().GetStart().GetPid()
	sel := byPID(pid)
	send := func(text string) {
		must(pc.SendInput(ctx, connect.NewRequest(&pb.SendInputRequest{
			Process: sel, Input: &pb.ProcessInput{Input: &pb.ProcessInput_Pty{Pty: []byte(text)}},
		})))
	}
	send("stty size\n")
	var before strings.Builder
	for !strings.Contains(before.String(), "24 80") && s.Receive() {
		before.Write(s.Msg().GetEvent().GetData().GetPty())
	}
	must(pc.Update(ctx, connect.NewRequest(&pb.UpdateRequest{Process: sel, Pty: &pb.PTY{Size: &pb.PTY_Size{Cols: 120, Rows: 40}}})))
	send("stty size; exit 0\n")
	r := collectRest(t, pid, s.Receive, func() *pb.ProcessEvent { return s.Msg().GetEvent() }, s.Err)
	if out := r.pty.String(); !strings.Contains(out, "40 120") {
		t.Fatalf("pty output after resize %q", out)
	}
	if r.stdout.Len() != 0 {
		t.Fatalf("pty process wrote to stdout channel: %q", r.stdout.String())
	}
}

func TestProcessLifetimeAndReattach(t *testing.T) {
	e := startEnvd(t)
	pc := e.process()

	// Connect-Timeout-Ms (the ctx deadline) is the process lifetime.
	short, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	s := must(pc.Start(short, sh("sleep 30")))
	s.Receive()
	pid := s.Msg().GetEvent().GetStart().GetPid()
	for s.Receive() {
	}
	s.Close()
	ctx := ctxT(t, 20*time.Second)
	waitGone(t, ctx, pc, pid)

	// A dropped connection without a deadline never kills the process.
	drop, dropCancel := context.WithCancel(context.Background())
	s = must(pc.Start(drop, sh("sleep 1; echo late")))
	s.Receive()
	pid = s.Msg().GetEvent().GetStart().GetPid()
	dropCancel()
	s.Close()
	c := must(pc.Connect(ctx, connect.NewRequest(&pb.ConnectRequest{Process: byPID(pid)})))
	r := collect(t, c.Receive, func() *pb.ProcessEvent { return c.Msg().GetEvent() }, c.Err)
	if r.stdout.String() != "late\n" || r.end.GetExitCode() != 0 {
		t.Fatalf("reattached: %q %v", r.stdout.String(), r.end)
	}

	// A Connect after the exit still gets start and end.
	c = must(pc.Connect(ctx, connect.NewRequest(&pb.ConnectRequest{Process: byPID(pid)})))
	r = collect(t, c.Receive, func() *pb.ProcessEvent { return c.Msg().GetEvent() }, c.Err)
	if r.pid != pid || r.end.GetExitCode() != 0 {
		t.Fatalf("late connect: pid %d end %v", r.pid, r.end)
	}
}

func TestProcessKeepalive(t *testing.T) {
	e := startEnvd(t)
	ctx := ctxT(t, 20*time.Second)
	req := sh("sleep 2.5")
	req.Header().Set("Keepalive-Ping-Interval", "1")
	r := run(t, ctx, e.process(), req)
	n := strings.Count(strings.Join(r.events, ","), "keepalive")
	if n < 1 {
		t.Fatalf("no keepalive in %v", r.events)
	}
}

func TestProcessHundredConcurrent(t *testing.T) {
	e := startEnvd(t)
	ctx := ctxT(t, 60*time.Second)
	pc := e.process()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := pc.Start(ctx, sh(fmt.Sprintf("sleep 0.2; echo %d", i)))
			if err != nil {
				errs <- err
				return
			}
			defer s.Close()
			var out strings.Builder
			var code int32 = -99
			for s.Receive() {
				ev := s.Msg().GetEvent()
				out.Write(ev.GetData().GetStdout())
				if ev.GetEnd() != nil {
					code = ev.GetEnd().GetExitCode()
				}
			}
			if s.Err() != nil || out.String() != fmt.Sprintf("%d\n", i) || code != 0 {
				errs <- fmt.Errorf("proc %d: out %q code %d err %v", i, out.String(), code, s.Err())
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func waitGone(t *testing.T, ctx context.Context, pc interface {
	List(context.Context, *connect.Request[pb.ListRequest]) (*connect.Response[pb.ListResponse], error)
}, pid uint32) {
	t.Helper()
	for {
		l := must(pc.List(ctx, connect.NewRequest(&pb.ListRequest{})))
		found := false
		for _, p := range l.Msg.GetProcesses() {
			found = found || p.GetPid() == pid
		}
		if !found {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("process %d still listed", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func ptr[T any](v T) *T { return &v }
