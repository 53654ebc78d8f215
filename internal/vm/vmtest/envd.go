// Package vmtest is the behaviour suite every vm.Driver must pass (Run),
// plus helpers to reach envd in a VM through Instance.DialEnvd: an HTTP
// client, a health wait, and a command runner over envd's process service.
// Test-only: production code must not import it.
package vmtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
	"github.com/wrenn-dev/wrenn-sandbox/proto/envd/gen/process"
	"github.com/wrenn-dev/wrenn-sandbox/proto/envd/gen/process/processconnect"
)

// EnvdBaseURL is the base URL used with HTTPClient; the host part is
// ignored (every connection goes through DialEnvd).
const EnvdBaseURL = "http://envd"

// HTTPClient is an HTTP/1.1 client whose every connection is a new
// Instance.DialEnvd stream. Keep-alive is off: a stream does not survive a
// pause/snapshot, so reusing one would only hide that.
func HTTPClient(inst vm.Instance) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return inst.DialEnvd(ctx)
		},
		DisableKeepAlives: true,
	}}
}

// Health does one GET /health with timeout.
func Health(ctx context.Context, inst vm.Instance, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, EnvdBaseURL+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := HTTPClient(inst).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("envd health: %s", resp.Status)
	}
	return nil
}

// WaitEnvd polls /health until it answers or ctx ends.
func WaitEnvd(ctx context.Context, inst vm.Instance) error {
	var last error
	for {
		if last = Health(ctx, inst, 2*time.Second); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("envd never became healthy: %w (last: %w)", ctx.Err(), last)
		case <-inst.Exited():
			return fmt.Errorf("vm exited while waiting for envd (last: %w)", last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Result is what a command printed and how it ended.
type Result struct {
	Stdout, Stderr string
	ExitCode       int
}

// Exec runs cmd with args through envd's process service (as root) and
// collects its output.
func Exec(ctx context.Context, inst vm.Instance, cmd string, args ...string) (Result, error) {
	pc := processconnect.NewProcessClient(HTTPClient(inst), EnvdBaseURL)
	req := connect.NewRequest(&process.StartRequest{Process: &process.ProcessConfig{Cmd: cmd, Args: args}})
	req.Header().Set("Authorization", "Basic cm9vdDo=") // root:
	stream, err := pc.Start(ctx, req)
	if err != nil {
		return Result{}, fmt.Errorf("start %s: %w", cmd, err)
	}
	defer stream.Close()
	var out, errb strings.Builder
	for stream.Receive() {
		ev := stream.Msg().GetEvent()
		if d := ev.GetData(); d != nil {
			out.Write(d.GetStdout())
			errb.Write(d.GetStderr())
		}
		if end := ev.GetEnd(); end != nil {
			return Result{Stdout: out.String(), Stderr: errb.String(), ExitCode: int(end.GetExitCode())}, nil
		}
	}
	if err := stream.Err(); err != nil {
		return Result{}, fmt.Errorf("run %s: %w", cmd, err)
	}
	return Result{}, errors.New("process stream ended without an end event")
}
