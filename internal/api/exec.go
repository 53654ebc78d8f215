package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

// ExecRequest is the body of POST /v1/sandboxes/{id}/exec.
type ExecRequest struct {
	Cmd        string            `json:"cmd"`
	Args       []string          `json:"args"`
	Cwd        string            `json:"cwd"`
	Envs       map[string]string `json:"envs"`
	TimeoutSec int               `json:"timeout_sec"`
}

// ExecResult is the response of a non-streaming exec.
type ExecResult struct {
	ExitCode   int    `json:"exit_code"`
	Stdout     string `json:"stdout"`
	Stderr     string `json:"stderr"`
	DurationMS int64  `json:"duration_ms"`
	// Truncated is true when stdout or stderr exceeded the server's limit.
	Truncated bool   `json:"truncated,omitempty"`
	Status    string `json:"status,omitempty"`
	Error     string `json:"error,omitempty"`
}

const (
	defaultExecTimeout = 60
	maxExecTimeout     = 3600
	maxArgs            = 1024
)

func (e *ExecRequest) normalize() error {
	if e.Cmd == "" || strings.ContainsRune(e.Cmd, 0) {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "cmd is required")
	}
	if len(e.Args) > maxArgs {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "at most %d args", maxArgs)
	}
	if e.TimeoutSec == 0 {
		e.TimeoutSec = defaultExecTimeout
	}
	if e.TimeoutSec < 0 || e.TimeoutSec > maxExecTimeout {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "timeout_sec %d: want 1-%d", e.TimeoutSec, maxExecTimeout)
	}
	return checkMap("envs", e.Envs, envKeyRe.MatchString, maxEnvValue)
}

// busy marks sandbox id active for the idle timer now, every
// ActivityEvery while the operation lasts, and when done is called.
func (s *Server) busy(id string) (done func()) {
	if s.activity == nil {
		return func() {}
	}
	s.activity.Touch(id)
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(s.cfg.ActivityEvery)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				s.activity.Touch(id)
			}
		}
	}()
	return func() {
		close(stop)
		s.activity.Touch(id)
	}
}

// running returns the caller's sandbox if it is running (else conflict).
func (s *Server) running(r *http.Request) (store.Sandbox, Agent, error) {
	sb, err := s.lookup(r)
	if err != nil {
		return sb, nil, err
	}
	if sb.Status != models.StatusRunning {
		return sb, nil, errdefs.Errorf(errdefs.ErrConflict, "sandbox %s is %s, not running", sb.ID, sb.Status)
	}
	a, err := s.agents.Agent(sb.HostID)
	return sb, a, err
}

func (s *Server) exec(w http.ResponseWriter, r *http.Request) {
	var req ExecRequest
	if err := s.decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := req.normalize(); err != nil {
		s.writeError(w, r, err)
		return
	}
	sb, agent, err := s.running(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer s.busy(sb.ID)()
	preq := &pb.ExecRequest{SandboxId: sb.ID, Cmd: req.Cmd, Args: req.Args, Envs: req.Envs, Cwd: req.Cwd,
		Timeout: durationpb.New(time.Duration(req.TimeoutSec) * time.Second)}
	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(req.TimeoutSec)*time.Second+30*time.Second)
	defer cancel()
	start := time.Now()
	var res ExecResult
	var nOut, nErr int64
	if strings.Contains(r.Header.Get("Accept"), "text/event-stream") {
		err = s.execStream(ctx, w, agent, preq, &res, &nOut, &nErr)
	} else {
		err = s.execCollect(ctx, agent, preq, &res, &nOut, &nErr)
		if err == nil {
			writeJSON(w, http.StatusOK, res)
		} else {
			s.writeError(w, r, err)
		}
	}
	s.record(r, sb, store.AuditEvent{Type: store.AuditExec, Command: commandLine(req),
		ExitCode: exitPtr(err, res.ExitCode), DurationMS: time.Since(start).Milliseconds(),
		StdoutBytes: nOut, StderrBytes: nErr, Error: errText(err, res.Error)})
}

func commandLine(req ExecRequest) string {
	return truncate(strings.Join(append([]string{req.Cmd}, req.Args...), " "), 4096)
}

func exitPtr(err error, code int) *int {
	if err != nil {
		return nil
	}
	return &code
}

func errText(err error, exitErr string) string {
	if err != nil {
		return truncate(err.Error(), 1000)
	}
	return exitErr
}

func (s *Server) execCollect(ctx context.Context, a Agent, req *pb.ExecRequest, res *ExecResult, nOut, nErr *int64) error {
	var out, errb strings.Builder
	limit := s.cfg.MaxOutputBytes
	keep := func(b *strings.Builder, p []byte) {
		if room := limit - b.Len(); room < len(p) {
			p = p[:max(room, 0)]
			res.Truncated = true
		}
		b.Write(p)
	}
	exited := false
	err := a.Exec(ctx, req, func(ev *pb.ExecResponse) error {
		switch e := ev.GetEvent().(type) {
		case *pb.ExecResponse_Stdout:
			*nOut += int64(len(e.Stdout))
			keep(&out, e.Stdout)
		case *pb.ExecResponse_Stderr:
			*nErr += int64(len(e.Stderr))
			keep(&errb, e.Stderr)
		case *pb.ExecResponse_Exit:
			exited = true
			fillExit(res, e.Exit)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !exited {
		return fmt.Errorf("exec: the agent ended the stream without an exit event")
	}
	res.Stdout, res.Stderr = out.String(), errb.String()
	return nil
}

func fillExit(res *ExecResult, x *pb.ExecExit) {
	res.ExitCode = int(x.GetExitCode())
	res.DurationMS = x.GetDuration().AsDuration().Milliseconds()
	res.Status = x.GetStatus()
	res.Error = x.GetError()
}

// Server-sent events of the streaming exec, one JSON object per event:
//
//	event: start   data: {"pid":123}
//	event: stdout  data: {"data":"<base64>"}
//	event: stderr  data: {"data":"<base64>"}
//	event: exit    data: {"exit_code":0,"duration_ms":12,"status":"exit status 0"}
//	event: error   data: {"error":{"code":"...","message":"..."}}
//
// exit or error is always the last event.
type sseData struct {
	PID  uint32 `json:"pid,omitempty"`
	Data []byte `json:"data,omitempty"`
}

func (s *Server) execStream(ctx context.Context, w http.ResponseWriter, a Agent, req *pb.ExecRequest,
	res *ExecResult, nOut, nErr *int64) error {
	fl, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(event string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("encode %s event: %w", event, err)
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return fmt.Errorf("send %s event: %w", event, err)
		}
		if fl != nil {
			fl.Flush()
		}
		return nil
	}
	err := a.Exec(ctx, req, func(ev *pb.ExecResponse) error {
		switch e := ev.GetEvent().(type) {
		case *pb.ExecResponse_Started:
			return send("start", sseData{PID: e.Started.GetPid()})
		case *pb.ExecResponse_Stdout:
			*nOut += int64(len(e.Stdout))
			return send("stdout", sseData{Data: e.Stdout})
		case *pb.ExecResponse_Stderr:
			*nErr += int64(len(e.Stderr))
			return send("stderr", sseData{Data: e.Stderr})
		case *pb.ExecResponse_Exit:
			fillExit(res, e.Exit)
			return send("exit", ExecResult{ExitCode: res.ExitCode, DurationMS: res.DurationMS,
				Status: res.Status, Error: res.Error})
		}
		return nil
	})
	if err != nil {
		_, code, msg := classify(err)
		_ = send("error", ErrorBody{Error: ErrorDetail{Code: code, Message: msg}})
	}
	return err
}

// record queues an audit event (never blocks the request).
func (s *Server) record(r *http.Request, sb store.Sandbox, ev store.AuditEvent) {
	if s.audit == nil {
		return
	}
	ev.SandboxID, ev.OwnerID, ev.APIKeyID = sb.ID, sb.OwnerID, apiKeyFrom(r.Context()).ID
	if !s.audit.Record(ev) {
		s.log.Warn("audit event dropped", "sandbox_id", sb.ID, "event_type", ev.Type)
	}
}
