package sandbox

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/proto/envd/gen/process"
)

// stdinChunk bounds one SendInput message.
const stdinChunk = 64 << 10

// ExecSpec is one command to run.
type ExecSpec struct {
	Cmd     string
	Args    []string
	Envs    map[string]string
	Cwd     string
	User    string        // "" = the sandbox's default user
	Timeout time.Duration // 0 = until the caller goes away
	Stdin   []byte        // written to stdin, which is then closed
}

// ExecSink receives a command's events as they arrive. An error from it
// ends the command (it is killed).
type ExecSink interface {
	Started(pid uint32) error
	Stdout(p []byte) error
	Stderr(p []byte) error
}

// ExecExit is how a command ended.
type ExecExit struct {
	ExitCode int
	Exited   bool // false: killed by a signal
	Status   string
	Error    string
	Duration time.Duration
}

// envdFor returns the envd client of a running sandbox.
func (m *Manager) envdFor(sid string) (*envdclient.Client, error) {
	if sb := m.lookup(sid); sb != nil {
		rec, _, c := sb.live()
		switch {
		case rec == nil:
		case rec.Status != models.StatusRunning:
			return nil, errdefs.Errorf(errdefs.ErrConflict, "sandbox %s is %s", sid, rec.Status)
		case c == nil:
			return nil, errdefs.Errorf(errdefs.ErrUnavailable, "sandbox %s has no envd connection", sid)
		default:
			return c, nil
		}
	}
	return nil, errdefs.Errorf(errdefs.ErrNotFound, "sandbox %s", sid)
}

// asUser sets the Basic auth header that makes envd run a request as user.
func asUser(h interface{ Set(string, string) }, user string) {
	if user != "" {
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":")))
	}
}

// Exec runs a command in a running sandbox, streaming its output to sink,
// and returns how it ended. When ctx ends first the command is killed.
func (m *Manager) Exec(ctx context.Context, sid string, spec ExecSpec, sink ExecSink) (ExecExit, error) {
	if spec.Cmd == "" {
		return ExecExit{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "exec: empty command")
	}
	c, err := m.envdFor(sid)
	if err != nil {
		return ExecExit{}, err
	}
	start := time.Now()
	if spec.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, spec.Timeout)
		defer cancel()
	}
	cfg := &process.ProcessConfig{Cmd: spec.Cmd, Args: spec.Args, Envs: spec.Envs}
	if spec.Cwd != "" {
		cfg.Cwd = &spec.Cwd
	}
	wantStdin := len(spec.Stdin) > 0
	req := connect.NewRequest(&process.StartRequest{Process: cfg, Stdin: &wantStdin})
	asUser(req.Header(), spec.User)
	stream, err := c.Process.Start(ctx, req)
	if err != nil {
		return ExecExit{}, fmt.Errorf("exec %s: %w", spec.Cmd, envdError(err))
	}
	defer stream.Close()
	var pid uint32
	var exit ExecExit
	ended := false
	for !ended && stream.Receive() {
		var serr error
		switch e := stream.Msg().GetEvent().GetEvent().(type) {
		case *process.ProcessEvent_Start:
			pid = e.Start.GetPid()
			serr = sink.Started(pid)
			if serr == nil && wantStdin {
				go m.feedStdin(ctx, c, pid, spec)
			}
		case *process.ProcessEvent_Data:
			switch d := e.Data.GetOutput().(type) {
			case *process.ProcessEvent_DataEvent_Stdout:
				serr = sink.Stdout(d.Stdout)
			case *process.ProcessEvent_DataEvent_Stderr:
				serr = sink.Stderr(d.Stderr)
			case *process.ProcessEvent_DataEvent_Pty:
				serr = sink.Stdout(d.Pty)
			}
		case *process.ProcessEvent_End:
			exit = ExecExit{
				ExitCode: int(e.End.GetExitCode()), Exited: e.End.GetExited(),
				Status: e.End.GetStatus(), Error: e.End.GetError(), Duration: time.Since(start),
			}
			ended = true
		}
		if serr != nil {
			m.kill(c, pid, spec.User)
			return exit, fmt.Errorf("exec %s: %w", spec.Cmd, serr)
		}
	}
	if ended {
		return exit, nil
	}
	m.kill(c, pid, spec.User)
	if err := stream.Err(); err != nil {
		if ctx.Err() != nil {
			return exit, fmt.Errorf("exec %s: %w", spec.Cmd, ctx.Err())
		}
		return exit, fmt.Errorf("exec %s: %w", spec.Cmd, envdError(err))
	}
	return exit, fmt.Errorf("exec %s: %w: %w", spec.Cmd, errdefs.ErrUnavailable, envdclient.ErrNoEndEvent)
}

// feedStdin writes spec.Stdin to the process and closes its stdin.
func (m *Manager) feedStdin(ctx context.Context, c *envdclient.Client, pid uint32, spec ExecSpec) {
	sel := &process.ProcessSelector{Selector: &process.ProcessSelector_Pid{Pid: pid}}
	for data := spec.Stdin; len(data) > 0; {
		n := min(len(data), stdinChunk)
		req := connect.NewRequest(&process.SendInputRequest{Process: sel,
			Input: &process.ProcessInput{Input: &process.ProcessInput_Stdin{Stdin: data[:n]}}})
		asUser(req.Header(), spec.User)
		if _, err := c.Process.SendInput(ctx, req); err != nil {
			m.log.Debug("send stdin", "pid", pid, "err", err)
			return
		}
		data = data[n:]
	}
	req := connect.NewRequest(&process.CloseStdinRequest{Process: sel})
	asUser(req.Header(), spec.User)
	if _, err := c.Process.CloseStdin(ctx, req); err != nil {
		m.log.Debug("close stdin", "pid", pid, "err", err)
	}
}

// kill sends SIGKILL to a process the caller no longer waits for (envd
// keeps processes whose stream was dropped).
func (m *Manager) kill(c *envdclient.Client, pid uint32, user string) {
	if pid == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := connect.NewRequest(&process.SendSignalRequest{
		Process: &process.ProcessSelector{Selector: &process.ProcessSelector_Pid{Pid: pid}},
		Signal:  process.Signal_SIGNAL_SIGKILL,
	})
	asUser(req.Header(), user)
	if _, err := c.Process.SendSignal(ctx, req); err != nil {
		var cerr *connect.Error
		if !errors.As(err, &cerr) || cerr.Code() != connect.CodeNotFound {
			m.log.Debug("kill abandoned process", "pid", pid, "err", err)
		}
	}
}
