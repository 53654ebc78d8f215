package sandbox

import (
	"context"
	"fmt"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/proto/envd/gen/process"
)

// TerminalSpec describes an interactive PTY session.
type TerminalSpec struct {
	Cmd        string // default /bin/sh
	Args       []string
	Envs       map[string]string
	Cwd        string
	User       string
	Cols, Rows uint32 // default 80x24
}

// Terminal is one PTY session in a sandbox. Recv is for one goroutine;
// Input and Resize may be called from another.
type Terminal struct {
	m      *Manager
	c      *envdclient.Client
	user   string
	pid    uint32
	start  time.Time
	cancel context.CancelFunc
	stream *connect.ServerStreamForClient[process.StartResponse]

	inMu   sync.Mutex // keeps input in order
	ended  bool
	closed sync.Once
}

// OpenTerminal starts a PTY session and returns once its process runs.
func (m *Manager) OpenTerminal(ctx context.Context, sid string, spec TerminalSpec) (*Terminal, error) {
	c, err := m.envdFor(sid)
	if err != nil {
		return nil, err
	}
	if spec.Cmd == "" {
		spec.Cmd, spec.Args = "/bin/sh", []string{"-l"}
	}
	if spec.Cols == 0 || spec.Rows == 0 {
		spec.Cols, spec.Rows = 80, 24
	}
	envs := map[string]string{"TERM": "xterm-256color"}
	for k, v := range spec.Envs {
		envs[k] = v
	}
	cfg := &process.ProcessConfig{Cmd: spec.Cmd, Args: spec.Args, Envs: envs}
	if spec.Cwd != "" {
		cfg.Cwd = &spec.Cwd
	}
	stdin := true
	req := connect.NewRequest(&process.StartRequest{
		Process: cfg, Stdin: &stdin,
		Pty: &process.PTY{Size: &process.PTY_Size{Cols: spec.Cols, Rows: spec.Rows}},
	})
	asUser(req.Header(), spec.User)
	sctx, cancel := context.WithCancel(ctx)
	stream, err := c.Process.Start(sctx, req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("terminal: %w", envdError(err))
	}
	t := &Terminal{m: m, c: c, user: spec.User, start: time.Now(), cancel: cancel, stream: stream}
	// The first event is the start event with the pid.
	for t.pid == 0 {
		if !stream.Receive() {
			t.Close()
			if err := stream.Err(); err != nil {
				return nil, fmt.Errorf("terminal: %w", envdError(err))
			}
			return nil, fmt.Errorf("terminal: %w: stream ended before the process started", errdefs.ErrUnavailable)
		}
		if s, ok := stream.Msg().GetEvent().GetEvent().(*process.ProcessEvent_Start); ok {
			t.pid = s.Start.GetPid()
		}
	}
	return t, nil
}

// PID is the session's process ID in the guest.
func (t *Terminal) PID() uint32 { return t.pid }

func (t *Terminal) selector() *process.ProcessSelector {
	return &process.ProcessSelector{Selector: &process.ProcessSelector_Pid{Pid: t.pid}}
}

// Recv returns the next output; exit is set (and output nil) once the
// process has ended, after which Recv must not be called again.
func (t *Terminal) Recv() (output []byte, exit *ExecExit, err error) {
	for t.stream.Receive() {
		switch e := t.stream.Msg().GetEvent().GetEvent().(type) {
		case *process.ProcessEvent_Data:
			if p := e.Data.GetPty(); p != nil {
				return p, nil, nil
			}
			if p := e.Data.GetStdout(); p != nil {
				return p, nil, nil
			}
			if p := e.Data.GetStderr(); p != nil {
				return p, nil, nil
			}
		case *process.ProcessEvent_End:
			t.inMu.Lock()
			t.ended = true
			t.inMu.Unlock()
			return nil, &ExecExit{ExitCode: int(e.End.GetExitCode()), Exited: e.End.GetExited(),
				Status: e.End.GetStatus(), Error: e.End.GetError(), Duration: time.Since(t.start)}, nil
		}
	}
	if err := t.stream.Err(); err != nil {
		return nil, nil, fmt.Errorf("terminal: %w", envdError(err))
	}
	return nil, nil, fmt.Errorf("terminal: %w: %w", errdefs.ErrUnavailable, envdclient.ErrNoEndEvent)
}

// Input writes keystrokes to the PTY.
func (t *Terminal) Input(ctx context.Context, p []byte) error {
	t.inMu.Lock()
	defer t.inMu.Unlock()
	if t.ended {
		return errdefs.Errorf(errdefs.ErrConflict, "terminal: the process has ended")
	}
	req := connect.NewRequest(&process.SendInputRequest{Process: t.selector(),
		Input: &process.ProcessInput{Input: &process.ProcessInput_Pty{Pty: p}}})
	asUser(req.Header(), t.user)
	if _, err := t.c.Process.SendInput(ctx, req); err != nil {
		return fmt.Errorf("terminal input: %w", envdError(err))
	}
	return nil
}

// Resize changes the PTY's window size.
func (t *Terminal) Resize(ctx context.Context, cols, rows uint32) error {
	if cols == 0 || rows == 0 {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "terminal size %dx%d", cols, rows)
	}
	req := connect.NewRequest(&process.UpdateRequest{Process: t.selector(),
		Pty: &process.PTY{Size: &process.PTY_Size{Cols: cols, Rows: rows}}})
	asUser(req.Header(), t.user)
	if _, err := t.c.Process.Update(ctx, req); err != nil {
		return fmt.Errorf("terminal resize: %w", envdError(err))
	}
	return nil
}

// Kill ends the session's process if it still runs; Recv then returns its
// exit.
func (t *Terminal) Kill() {
	t.inMu.Lock()
	ended := t.ended
	t.inMu.Unlock()
	if !ended {
		t.m.kill(t.c, t.pid, t.user)
	}
}

// Close ends the session: the process is killed if it still runs and the
// stream is dropped.
func (t *Terminal) Close() {
	t.closed.Do(func() {
		t.inMu.Lock()
		ended := t.ended
		t.inMu.Unlock()
		if !ended {
			t.m.kill(t.c, t.pid, t.user)
		}
		t.cancel()
		_ = t.stream.Close()
	})
}
