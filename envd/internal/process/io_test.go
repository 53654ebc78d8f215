package process

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	pb "github.com/wrenn-dev/envd/internal/gen/process"
)

func stdinInput(b string) *pb.ProcessInput {
	return &pb.ProcessInput{Input: &pb.ProcessInput_Stdin{Stdin: []byte(b)}}
}

func ptyInput(b string) *pb.ProcessInput {
	return &pb.ProcessInput{Input: &pb.ProcessInput_Pty{Pty: []byte(b)}}
}

// started starts a process and returns its pid and a channel with the
// stream's result once it ends.
func (h *harness) started(t testing.TB, ctx context.Context, msg *pb.StartRequest, hdr ...string) (uint32, <-chan *result) {
	t.Helper()
	req := connect.NewRequest(msg)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header().Set(hdr[i], hdr[i+1])
	}
	s, err := h.client.Start(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Receive() {
		t.Fatalf("no start event: %v", s.Err())
	}
	pid := s.Msg().GetEvent().GetStart().GetPid()
	if pid == 0 {
		t.Fatalf("first event %v, want start", s.Msg().GetEvent())
	}
	out := make(chan *result, 1)
	go func() {
		defer s.Close()
		r, err := drain(s)
		r.pid = pid
		r.kinds = append([]string{"start"}, r.kinds...)
		if err != nil {
			r.kinds = append(r.kinds, "error:"+err.Error())
		}
		out <- r
	}()
	return pid, out
}

func waitResult(t testing.TB, ch <-chan *result) *result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatal("process stream did not end")
		return nil
	}
}

func TestSendInputAndCloseStdin(t *testing.T) {
	h := newHarness(t)
	ctx := bg(t)
	pid, res := h.started(t, ctx, startReq("cat"))
	for _, chunk := range []string{"hello ", "world\n", "\x00binary\xff"} {
		if _, err := h.client.SendInput(ctx, connectReq(&pb.SendInputRequest{Process: pidSel(pid), Input: stdinInput(chunk)})); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := h.client.CloseStdin(ctx, connectReq(&pb.CloseStdinRequest{Process: pidSel(pid)})); err != nil {
		t.Fatal(err)
	}
	r := waitResult(t, res)
	r.checkOrder(t)
	if string(r.stdout) != "hello world\n\x00binary\xff" || r.end.GetExitCode() != 0 {
		t.Fatalf("stdout %q end %v", r.stdout, r.end)
	}
}

func TestStreamInput(t *testing.T) {
	for _, h2c := range []bool{false, true} {
		name := map[bool]string{false: "http1", true: "h2c"}[h2c]
		t.Run(name, func(t *testing.T) {
			h := newHarnessProto(t, h2c)
			ctx := bg(t)
			pid, res := h.started(t, ctx, startReq("cat"))
			in := h.client.StreamInput(ctx)
			msgs := []*pb.StreamInputRequest{
				{Event: &pb.StreamInputRequest_Start{Start: &pb.StreamInputRequest_StartEvent{Process: pidSel(pid)}}},
				{Event: &pb.StreamInputRequest_Keepalive{Keepalive: &pb.StreamInputRequest_KeepAlive{}}},
			}
			var want strings.Builder
			for i := range 200 {
				line := strings.Repeat(string(rune('a'+i%26)), i) + "\n"
				want.WriteString(line)
				msgs = append(msgs, &pb.StreamInputRequest{Event: &pb.StreamInputRequest_Data{
					Data: &pb.StreamInputRequest_DataEvent{Input: stdinInput(line)}}})
			}
			for _, m := range msgs {
				if err := in.Send(m); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := in.CloseAndReceive(); err != nil {
				t.Fatal(err)
			}
			if _, err := h.client.CloseStdin(ctx, connectReq(&pb.CloseStdinRequest{Process: pidSel(pid)})); err != nil {
				t.Fatal(err)
			}
			r := waitResult(t, res)
			if string(r.stdout) != want.String() {
				t.Fatalf("stdout %d bytes, want %d in order", len(r.stdout), want.Len())
			}
		})
	}
}

func TestStreamInputErrors(t *testing.T) {
	h := newHarness(t)
	ctx := bg(t)
	data := &pb.StreamInputRequest{Event: &pb.StreamInputRequest_Data{Data: &pb.StreamInputRequest_DataEvent{Input: stdinInput("x")}}}
	in := h.client.StreamInput(ctx)
	in.Send(data)
	_, err := in.CloseAndReceive()
	wantCode(t, err, connect.CodeInvalidArgument)

	in = h.client.StreamInput(ctx)
	in.Send(&pb.StreamInputRequest{Event: &pb.StreamInputRequest_Start{Start: &pb.StreamInputRequest_StartEvent{Process: pidSel(1 << 30)}}})
	_, err = in.CloseAndReceive()
	wantCode(t, err, connect.CodeNotFound)
}

func TestInputErrors(t *testing.T) {
	h := newHarness(t)
	ctx := bg(t)
	no := false
	noStdin := startReq("sleep", "100")
	noStdin.Stdin = &no
	pidNoStdin, _ := h.started(t, ctx, noStdin)
	pidPipe, _ := h.started(t, ctx, startReq("sleep", "100"))
	ptyReq := startReq("sleep", "100")
	ptyReq.Pty = &pb.PTY{Size: &pb.PTY_Size{Cols: 80, Rows: 24}}
	pidPTY, _ := h.started(t, ctx, ptyReq)
	defer func() {
		for _, pid := range []uint32{pidNoStdin, pidPipe, pidPTY} {
			h.client.SendSignal(ctx, connectReq(&pb.SendSignalRequest{Process: pidSel(pid), Signal: pb.Signal_SIGNAL_SIGKILL}))
		}
	}()

	send := func(pid uint32, in *pb.ProcessInput) error {
		_, err := h.client.SendInput(ctx, connectReq(&pb.SendInputRequest{Process: pidSel(pid), Input: in}))
		return err
	}
	closeStdin := func(pid uint32) error {
		_, err := h.client.CloseStdin(ctx, connectReq(&pb.CloseStdinRequest{Process: pidSel(pid)}))
		return err
	}
	resize := func(pid uint32) error {
		_, err := h.client.Update(ctx, connectReq(&pb.UpdateRequest{Process: pidSel(pid), Pty: &pb.PTY{Size: &pb.PTY_Size{Cols: 10, Rows: 10}}}))
		return err
	}
	cases := []struct {
		name string
		call func() error
		code connect.Code
		msg  string
	}{
		{"stdin disabled", func() error { return send(pidNoStdin, stdinInput("x")) }, connect.CodeFailedPrecondition, "stdin disabled"},
		{"pty input to pipes", func() error { return send(pidPipe, ptyInput("x")) }, connect.CodeInvalidArgument, "no PTY"},
		{"stdin input to pty", func() error { return send(pidPTY, stdinInput("x")) }, connect.CodeInvalidArgument, "PTY"},
		{"empty input", func() error { return send(pidPipe, &pb.ProcessInput{}) }, connect.CodeInvalidArgument, "stdin or pty"},
		{"close stdin of pty", func() error { return closeStdin(pidPTY) }, connect.CodeFailedPrecondition, "0x04"},
		{"resize without pty", func() error { return resize(pidPipe) }, connect.CodeFailedPrecondition, "PTY"},
		{"close stdin twice", func() error { closeStdin(pidPipe); return closeStdin(pidPipe) }, 0, ""},
		{"write after close", func() error { return send(pidPipe, stdinInput("x")) }, connect.CodeFailedPrecondition, "closed"},
		{"unknown pid", func() error { return send(1<<30, stdinInput("x")) }, connect.CodeNotFound, "not found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.call()
			if c.code == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantCode(t, err, c.code)
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %q does not mention %q", err, c.msg)
			}
		})
	}
}

// waitOutput polls r until it contains want.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPTY(t *testing.T) {
	h := newHarness(t)
	ctx := bg(t)
	req := startReq("sh", "-c", `stty size; tty; read line; stty size; echo "got:$line"`)
	req.Pty = &pb.PTY{Size: &pb.PTY_Size{Cols: 100, Rows: 30}}
	req.Process.Envs = map[string]string{"TERM": "xterm-256color"}
	s, err := h.client.Start(ctx, connectReq(req))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r := &result{}
	next := func() {
		if !s.Receive() {
			t.Fatalf("stream ended early: %v; output %q", s.Err(), r.pty)
		}
		if err := r.add(s.Msg().GetEvent()); err != nil {
			t.Fatal(err)
		}
	}
	next()
	pid := r.pid
	for !bytes.Contains(r.pty, []byte("/dev/pts/")) {
		next()
	}
	if !bytes.Contains(r.pty, []byte("30 100\r\n")) {
		t.Fatalf("initial size: %q", r.pty)
	}
	if _, err := h.client.Update(ctx, connectReq(&pb.UpdateRequest{Process: pidSel(pid), Pty: &pb.PTY{Size: &pb.PTY_Size{Cols: 120, Rows: 50}}})); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.SendInput(ctx, connectReq(&pb.SendInputRequest{Process: pidSel(pid), Input: ptyInput("hello\n")})); err != nil {
		t.Fatal(err)
	}
	for r.end == nil {
		next()
	}
	r.checkOrder(t)
	out := string(r.pty)
	for _, want := range []string{"hello\r\n", "50 120\r\n", "got:hello\r\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("pty output %q lacks %q", out, want)
		}
	}
	if len(r.stdout)+len(r.stderr) != 0 {
		t.Errorf("pty process sent stdout/stderr events")
	}
}

func TestPTYEndOfInput(t *testing.T) {
	h := newHarness(t)
	ctx := bg(t)
	req := startReq("cat")
	req.Pty = &pb.PTY{Size: &pb.PTY_Size{Cols: 80, Rows: 24}}
	pid, res := h.started(t, ctx, req)
	for _, in := range []string{"abc\n", "\x04"} {
		if _, err := h.client.SendInput(ctx, connectReq(&pb.SendInputRequest{Process: pidSel(pid), Input: ptyInput(in)})); err != nil {
			t.Fatal(err)
		}
	}
	r := waitResult(t, res)
	if r.end == nil || r.end.GetExitCode() != 0 || strings.Count(string(r.pty), "abc\r\n") != 2 {
		t.Fatalf("pty %q end %v (%v)", r.pty, r.end, r.kinds)
	}
}
