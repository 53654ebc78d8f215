package envdclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn-sandbox/proto/envd/gen/process"
)

// ExecRequest describes one command to run in the guest.
type ExecRequest struct {
	Cmd  string
	Args []string
	Env  map[string]string
	Cwd  string // "" = envd's default (the user's home or /init's workdir)
	// Timeout is the process's lifetime: envd kills it at the deadline
	// (sent as Connect-Timeout-Ms). 0 = bounded only by ctx.
	Timeout time.Duration
	Tag     string
}

// ExecResult is how a command ended.
type ExecResult struct {
	PID      uint32
	ExitCode int
	Exited   bool   // ended by exit (false: killed by a signal)
	Status   string // envd's status text, e.g. "exit status 1"
	Error    string // envd's error text, if any
	Stdout   []byte // only filled by Exec
	Stderr   []byte // only filled by Exec
}

// ErrNoEndEvent means the process stream ended without an end event.
var ErrNoEndEvent = errors.New("process stream ended without an end event")

// Exec runs a command to completion and collects its output.
func (c *Client) Exec(ctx context.Context, r ExecRequest) (ExecResult, error) {
	var out, errb bytes.Buffer
	res, err := c.ExecStream(ctx, r, &out, &errb)
	res.Stdout, res.Stderr = out.Bytes(), errb.Bytes()
	return res, err
}

// ExecStream runs a command, writing its output to stdout and stderr as it
// arrives (either may be nil to discard), and returns when it has ended.
func (c *Client) ExecStream(ctx context.Context, r ExecRequest, stdout, stderr io.Writer) (ExecResult, error) {
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	if r.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.Timeout)
		defer cancel()
	}
	cfg := &process.ProcessConfig{Cmd: r.Cmd, Args: r.Args, Envs: r.Env}
	if r.Cwd != "" {
		cfg.Cwd = &r.Cwd
	}
	noStdin := false
	req := &process.StartRequest{Process: cfg, Stdin: &noStdin}
	if r.Tag != "" {
		req.Tag = &r.Tag
	}
	stream, err := c.Process.Start(ctx, connect.NewRequest(req))
	if err != nil {
		return ExecResult{}, fmt.Errorf("exec %s: %w", r.Cmd, err)
	}
	defer stream.Close()
	var res ExecResult
	ended := false
	for !ended && stream.Receive() {
		switch e := stream.Msg().GetEvent().GetEvent().(type) {
		case *process.ProcessEvent_Start:
			res.PID = e.Start.GetPid()
		case *process.ProcessEvent_Data:
			var werr error
			switch d := e.Data.GetOutput().(type) {
			case *process.ProcessEvent_DataEvent_Stdout:
				_, werr = stdout.Write(d.Stdout)
			case *process.ProcessEvent_DataEvent_Stderr:
				_, werr = stderr.Write(d.Stderr)
			case *process.ProcessEvent_DataEvent_Pty:
				_, werr = stdout.Write(d.Pty)
			}
			if werr != nil {
				return res, fmt.Errorf("exec %s: write output: %w", r.Cmd, werr)
			}
		case *process.ProcessEvent_End:
			res.ExitCode = int(e.End.GetExitCode())
			res.Exited = e.End.GetExited()
			res.Status = e.End.GetStatus()
			res.Error = e.End.GetError()
			ended = true
		}
	}
	if ended {
		return res, nil
	}
	if err := stream.Err(); err != nil {
		return res, fmt.Errorf("exec %s: %w", r.Cmd, err)
	}
	return res, fmt.Errorf("exec %s: %w", r.Cmd, ErrNoEndEvent)
}

// Shell runs `/bin/sh -c script` and collects its output.
func (c *Client) Shell(ctx context.Context, script string, timeout time.Duration) (ExecResult, error) {
	return c.Exec(ctx, ExecRequest{Cmd: "/bin/sh", Args: []string{"-c", script}, Timeout: timeout})
}
