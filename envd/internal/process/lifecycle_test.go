package process

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	pb "github.com/wrenn-dev/envd/internal/gen/process"
)

// readPidLine reads the first line of stdout (a pid printed by the script)
// from an open Start stream.
func readPidLine(t testing.TB, s *connect.ServerStreamForClient[pb.StartResponse]) (leader uint32, child int) {
	t.Helper()
	var out []byte
	for !bytes.Contains(out, []byte("\n")) {
		if !s.Receive() {
			t.Fatalf("stream ended before the pid line: %v (%q)", s.Err(), out)
		}
		ev := s.Msg().GetEvent()
		if p := ev.GetStart().GetPid(); p != 0 {
			leader = p
		}
		out = append(out, ev.GetData().GetStdout()...)
		out = append(out, ev.GetData().GetPty()...)
	}
	line, _, _ := bytes.Cut(out, []byte("\n"))
	n, err := strconv.Atoi(strings.TrimSpace(string(line)))
	if err != nil || n <= 1 {
		t.Fatalf("pid line %q: %v", line, err)
	}
	t.Cleanup(func() { unix.Kill(n, unix.SIGKILL) }) // if the test failed
	return leader, n
}

func TestSignalKillsProcessGroup(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		name   string
		script string
		pty    bool
		sig    pb.Signal
		status string
	}{
		{"sigkill", "sleep 1000 & echo $!; sleep 1000", false, pb.Signal_SIGNAL_SIGKILL, "signal: killed"},
		{"sigterm", "sleep 1000 & echo $!; sleep 1000", false, pb.Signal_SIGNAL_SIGTERM, "signal: terminated"},
		{"sigkill pty", "sleep 1000 & echo $!; sleep 1000", true, pb.Signal_SIGNAL_SIGKILL, "signal: killed"},
		// With job control the background job gets its own process group;
		// only the session-wide kill reaches it.
		{"sigkill pty job control", "set -m; sleep 1000 & echo $!; sleep 1000", true, pb.Signal_SIGNAL_SIGKILL, "signal: killed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := bg(t)
			req := startReq("sh", "-c", c.script)
			if c.pty {
				req.Pty = &pb.PTY{Size: &pb.PTY_Size{Cols: 80, Rows: 24}}
			}
			s, err := h.client.Start(ctx, connectReq(req))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			pid, child := readPidLine(t, s)
			if !alive(child) {
				t.Fatalf("grandchild %d not running", child)
			}
			if _, err := h.client.SendSignal(ctx, connectReq(&pb.SendSignalRequest{Process: pidSel(pid), Signal: c.sig})); err != nil {
				t.Fatal(err)
			}
			r, err := drain(s)
			if err != nil {
				t.Fatal(err)
			}
			if r.end == nil || r.end.GetStatus() != c.status || r.end.GetExited() || r.end.GetExitCode() != -1 {
				t.Fatalf("end %v, want %q", r.end, c.status)
			}
			waitGone(t, child)
		})
	}
}

func TestSendSignalErrors(t *testing.T) {
	h := newHarness(t)
	ctx := bg(t)
	pid, res := h.started(t, ctx, startReq("sleep", "100"))
	_, err := h.client.SendSignal(ctx, connectReq(&pb.SendSignalRequest{Process: pidSel(pid)}))
	wantCode(t, err, connect.CodeInvalidArgument)
	_, err = h.client.SendSignal(ctx, connectReq(&pb.SendSignalRequest{Process: pidSel(pid), Signal: pb.Signal(2)}))
	wantCode(t, err, connect.CodeInvalidArgument)
	if _, err := h.client.SendSignal(ctx, connectReq(&pb.SendSignalRequest{Process: pidSel(pid), Signal: pb.Signal_SIGNAL_SIGKILL})); err != nil {
		t.Fatal(err)
	}
	waitResult(t, res)
	// Killing an ended process is NotFound, which the SDKs read as "false".
	_, err = h.client.SendSignal(ctx, connectReq(&pb.SendSignalRequest{Process: pidSel(pid), Signal: pb.Signal_SIGNAL_SIGKILL}))
	wantCode(t, err, connect.CodeNotFound)
	if !strings.Contains(err.Error(), "already exited") {
		t.Fatalf("error %q", err)
	}
}

func TestSelectors(t *testing.T) {
	h := newHarness(t)
	ctx := bg(t)
	cases := []struct {
		name string
		sel  *pb.ProcessSelector
		code connect.Code
	}{
		{"nil", nil, connect.CodeInvalidArgument},
		{"empty", &pb.ProcessSelector{}, connect.CodeInvalidArgument},
		{"pid 0", pidSel(0), connect.CodeInvalidArgument},
		{"empty tag", tagSel(""), connect.CodeInvalidArgument},
		{"unknown pid", pidSel(1 << 30), connect.CodeNotFound},
		{"unknown tag", tagSel("nope"), connect.CodeNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := h.client.Connect(ctx, connectReq(&pb.ConnectRequest{Process: c.sel}))
			if err == nil {
				for s.Receive() {
				}
				err = s.Err()
			}
			wantCode(t, err, c.code)
			_, err = h.client.SendSignal(ctx, connectReq(&pb.SendSignalRequest{Process: c.sel, Signal: pb.Signal_SIGNAL_SIGKILL}))
			wantCode(t, err, c.code)
		})
	}
}

func TestTagSelectorAndList(t *testing.T) {
	h := newHarness(t)
	ctx := bg(t)
	tag := "my-tag"
	req := startReq("cat")
	req.Tag = &tag
	pid, res := h.started(t, ctx, req)

	list, err := h.client.List(ctx, connectReq(&pb.ListRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var found *pb.ProcessInfo
	for _, p := range list.Msg.GetProcesses() {
		if p.GetPid() == pid {
			found = p
		}
	}
	if found == nil || found.GetTag() != tag || found.GetConfig().GetCmd() != "cat" {
		t.Fatalf("list %v lacks pid %d with tag", list.Msg, pid)
	}

	if _, err := h.client.SendInput(ctx, connectReq(&pb.SendInputRequest{Process: tagSel(tag), Input: stdinInput("by tag\n")})); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.CloseStdin(ctx, connectReq(&pb.CloseStdinRequest{Process: tagSel(tag)})); err != nil {
		t.Fatal(err)
	}
	if r := waitResult(t, res); string(r.stdout) != "by tag\n" {
		t.Fatalf("stdout %q", r.stdout)
	}
	list, _ = h.client.List(ctx, connectReq(&pb.ListRequest{}))
	for _, p := range list.Msg.GetProcesses() {
		if p.GetPid() == pid {
			t.Fatal("ended process still listed")
		}
	}
}

func TestLateConnectGetsEnd(t *testing.T) {
	h := newHarness(t)
	ctx := bg(t)
	tag := "late"
	req := startReq("sh", "-c", "echo bye; exit 3")
	req.Tag = &tag
	r0, err := h.run(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for _, sel := range []*pb.ProcessSelector{pidSel(r0.pid), tagSel(tag)} {
		s, err := h.client.Connect(ctx, connectReq(&pb.ConnectRequest{Process: sel}))
		if err != nil {
			t.Fatal(err)
		}
		r, err := drain(s)
		if err != nil {
			t.Fatal(err)
		}
		r.checkOrder(t)
		if len(r.kinds) != 2 || r.pid != r0.pid || r.end.GetExitCode() != 3 {
			t.Fatalf("late connect: %v pid %d end %v", r.kinds, r.pid, r.end)
		}
	}
}

func TestRetentionBounded(t *testing.T) {
	h := newHarness(t, func(s *Service) { s.retainMax = 2 })
	ctx := bg(t)
	var pids []uint32
	for range 4 {
		r, err := h.run(ctx, startReq("true"))
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, r.pid)
	}
	for i, pid := range pids {
		s, err := h.client.Connect(ctx, connectReq(&pb.ConnectRequest{Process: pidSel(pid)}))
		if err == nil {
			_, err = drain(s)
		}
		if i < 2 {
			wantCode(t, err, connect.CodeNotFound)
		} else if err != nil {
			t.Fatalf("pid %d (kept): %v", pid, err)
		}
	}
}

func TestDroppedConnectionKeepsProcess(t *testing.T) {
	h := newHarness(t)
	ctx := bg(t)
	startCtx, cancel := context.WithCancel(ctx)
	pid, res := h.started(t, startCtx, startReq("cat"))
	cancel()
	if r := waitResult(t, res); r.end != nil {
		t.Fatalf("stream after cancel: %v", r.kinds)
	}
	time.Sleep(100 * time.Millisecond)
	if !alive(int(pid)) {
		t.Fatal("process died with its request")
	}
	list, err := h.client.List(ctx, connectReq(&pb.ListRequest{}))
	if err != nil || len(list.Msg.GetProcesses()) != 1 || list.Msg.GetProcesses()[0].GetPid() != pid {
		t.Fatalf("list %v %v", list, err)
	}

	// Re-attach, feed input, and see it come back on the new stream.
	s, err := h.client.Connect(ctx, connectReq(&pb.ConnectRequest{Process: pidSel(pid)}))
	if err != nil {
		t.Fatal(err)
	}
	if !s.Receive() || s.Msg().GetEvent().GetStart().GetPid() != pid {
		t.Fatalf("connect: first event %v %v", s.Msg(), s.Err())
	}
	if _, err := h.client.SendInput(ctx, connectReq(&pb.SendInputRequest{Process: pidSel(pid), Input: stdinInput("again\n")})); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.CloseStdin(ctx, connectReq(&pb.CloseStdinRequest{Process: pidSel(pid)})); err != nil {
		t.Fatal(err)
	}
	r, err := drain(s)
	if err != nil || string(r.stdout) != "again\n" || r.end.GetExitCode() != 0 {
		t.Fatalf("reattached: %q %v %v", r.stdout, r.end, err)
	}
}

func TestStartDeadlineIsLifetime(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(bg(t), 700*time.Millisecond)
	defer cancel()
	s, err := h.client.Start(ctx, connectReq(startReq("sh", "-c", "sleep 1000 & echo $!; sleep 1000")))
	if err != nil {
		t.Fatal(err)
	}
	pid, child := readPidLine(t, s)
	_, err = drain(s)
	wantCode(t, err, connect.CodeDeadlineExceeded)
	waitGone(t, child)
	waitGone(t, int(pid))
	waitFor(t, "process to leave the list", func() bool {
		l, err := h.client.List(bg(t), connectReq(&pb.ListRequest{}))
		return err == nil && len(l.Msg.GetProcesses()) == 0
	})
}

func TestKeepalive(t *testing.T) {
	h := newHarness(t)
	ctx := bg(t)
	r, err := h.run(ctx, startReq("sleep", "2.5"), "Keepalive-Ping-Interval", "1")
	if err != nil {
		t.Fatal(err)
	}
	r.checkOrder(t)
	if r.keepalives < 2 {
		t.Fatalf("%d keepalives in %v", r.keepalives, r.kinds)
	}
	// Connect streams get them too.
	pid, res := h.started(t, ctx, startReq("sleep", "1.6"))
	cr := connectReq(&pb.ConnectRequest{Process: pidSel(pid)})
	cr.Header().Set("Keepalive-Ping-Interval", "1")
	s, err := h.client.Connect(ctx, cr)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := drain(s)
	if err != nil || r2.keepalives < 1 {
		t.Fatalf("connect keepalives %v %v", r2.kinds, err)
	}
	if r := waitResult(t, res); r.keepalives != 0 {
		t.Fatalf("default interval sent keepalives: %v", r.kinds)
	}
}

func TestConcurrentProcesses(t *testing.T) {
	h := newHarness(t)
	ctx := bg(t)
	const n = 100
	errs := make(chan error, n)
	for i := range n {
		go func() {
			want := "p" + strconv.Itoa(i)
			r, err := h.run(ctx, startReq("sh", "-c", "sleep 0.2; echo "+want))
			switch {
			case err != nil:
				errs <- err
			case string(r.stdout) != want+"\n" || r.end.GetExitCode() != 0:
				errs <- &mismatch{want, string(r.stdout)}
			default:
				errs <- nil
			}
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

type mismatch struct{ want, got string }

func (m *mismatch) Error() string { return "want " + m.want + ", got " + strconv.Quote(m.got) }

func TestFanOut(t *testing.T) {
	h := newHarness(t)
	ctx := bg(t)
	pid, res := h.started(t, ctx, startReq("sh", "-c", "read x; seq 1 100000"))
	var followers []*connect.ServerStreamForClient[pb.ConnectResponse]
	for range 3 {
		s, err := h.client.Connect(ctx, connectReq(&pb.ConnectRequest{Process: pidSel(pid)}))
		if err != nil {
			t.Fatal(err)
		}
		if !s.Receive() { // start event: subscribed
			t.Fatal(s.Err())
		}
		followers = append(followers, s)
	}
	if _, err := h.client.SendInput(ctx, connectReq(&pb.SendInputRequest{Process: pidSel(pid), Input: stdinInput("go\n")})); err != nil {
		t.Fatal(err)
	}
	r := waitResult(t, res)
	for i, s := range followers {
		rf, err := drain(s)
		if err != nil || !bytes.Equal(rf.stdout, r.stdout) || rf.end == nil {
			t.Fatalf("follower %d: %d bytes (want %d), end %v, err %v", i, len(rf.stdout), len(r.stdout), rf.end, err)
		}
	}
	if sc := bufio.NewScanner(bytes.NewReader(r.stdout)); sc.Scan() && sc.Text() != "1" {
		t.Fatalf("first line %q", sc.Text())
	}
}

func TestStalledFollowerIsDropped(t *testing.T) {
	h := newHarness(t, func(s *Service) { s.slowAfter = 2 * time.Second })
	ctx := bg(t)
	pid, res := h.started(t, ctx, startReq("sh", "-c", "read x; head -c 33554432 /dev/zero"))
	stalled, err := h.client.Connect(ctx, connectReq(&pb.ConnectRequest{Process: pidSel(pid)}))
	if err != nil {
		t.Fatal(err)
	}
	if !stalled.Receive() {
		t.Fatal(stalled.Err())
	}
	if _, err := h.client.SendInput(ctx, connectReq(&pb.SendInputRequest{Process: pidSel(pid), Input: stdinInput("go\n")})); err != nil {
		t.Fatal(err)
	}
	// The Start stream still gets everything although one follower stopped
	// reading.
	r := waitResult(t, res)
	if len(r.stdout) != 32<<20 || r.end.GetExitCode() != 0 {
		t.Fatalf("start stream: %d bytes, end %v, %v", len(r.stdout), r.end, r.kinds[len(r.kinds)-1])
	}
	_, err = drain(stalled)
	wantCode(t, err, connect.CodeResourceExhausted)
}

func TestBackgroundChildDoesNotHoldEnd(t *testing.T) {
	h := newHarness(t)
	// The leader writes a lot just before exiting while a background child
	// keeps stdout open: all of the leader's output must arrive, and the end
	// must not wait for the child. The burst case leaves most of its output
	// in the pipe at exit.
	cases := []struct {
		name   string
		script string
		n      int
	}{
		{"through backpressure", "sleep 1000 & echo $!; head -c 3000000 /dev/zero; echo; echo done", 3000000},
		{"burst at exit", "sleep 1000 & echo $!; head -c 900000 /dev/zero; echo; exec echo done", 900000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			r, err := h.run(bg(t), startReq("sh", "-c", c.script))
			if err != nil {
				t.Fatal(err)
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("end took %v", time.Since(start))
			}
			line, rest, _ := bytes.Cut(r.stdout, []byte("\n"))
			child, _ := strconv.Atoi(string(line))
			if child > 1 {
				t.Cleanup(func() { unix.Kill(child, unix.SIGKILL) })
			}
			if len(rest) != c.n+len("\ndone\n") || !bytes.HasSuffix(rest, []byte("\ndone\n")) {
				t.Fatalf("stdout after pid: %d bytes, want %d", len(rest), c.n+len("\ndone\n"))
			}
			if !alive(child) {
				t.Fatal("background child was killed")
			}
			unix.Kill(child, unix.SIGKILL)
			waitGone(t, child)
		})
	}
}

func TestNoDescriptorLeak(t *testing.T) {
	h := newHarness(t)
	ctx := bg(t)
	count := func() int {
		h.tr.CloseIdleConnections()
		ents, _ := os.ReadDir("/proc/self/fd")
		return len(ents)
	}
	if _, err := h.run(ctx, startReq("true")); err != nil { // warm up the connection pool
		t.Fatal(err)
	}
	base := count()
	ptyReq := startReq("sh", "-c", "echo hi")
	ptyReq.Pty = &pb.PTY{Size: &pb.PTY_Size{Cols: 80, Rows: 24}}
	for range 10 {
		for _, req := range []*pb.StartRequest{startReq("true"), startReq("sh", "-c", "echo x >&2"), ptyReq} {
			if _, err := h.run(ctx, req); err != nil {
				t.Fatal(err)
			}
		}
		pid, res := h.started(t, ctx, startReq("cat"))
		h.client.CloseStdin(ctx, connectReq(&pb.CloseStdinRequest{Process: pidSel(pid)}))
		waitResult(t, res)
	}
	waitFor(t, "descriptors to be closed", func() bool { return count() <= base })
	t.Logf("descriptors: %d before, %d after", base, count())
}

func TestCloseKillsEverything(t *testing.T) {
	h := newHarness(t)
	ctx := bg(t)
	s, err := h.client.Start(ctx, connectReq(startReq("sh", "-c", "sleep 1000 & echo $!; sleep 1000")))
	if err != nil {
		t.Fatal(err)
	}
	_, child := readPidLine(t, s)
	h.svc.Close()
	r, err := drain(s)
	if err != nil || r.end.GetStatus() != "signal: killed" {
		t.Fatalf("end %v, err %v", r.end, err)
	}
	waitGone(t, child)
	_, err = h.run(ctx, startReq("true"))
	wantCode(t, err, connect.CodeUnavailable)
}
