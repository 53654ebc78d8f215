package api

// An in-process stand-in for a host agent, used ONLY by this package's
// handler tests (error-path tables, owner isolation, quota races at the
// handler level). The real agent over mTLS is exercised by
// tests/integration/cp_*_test.go. It keeps sandboxes, their states and
// their files like the agent does, refuses what the agent refuses with
// the same error kinds, and can be told to fail one operation.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

type fakeAgent struct {
	mu      sync.Mutex
	sbs     map[string]pb.SandboxState
	files   map[string][]byte // sandbox id + path
	fail    map[string]error  // op -> error
	creates int
	delay   time.Duration
	// lastCreate is the last create request received.
	lastCreate *pb.CreateSandboxRequest
	// pauseGate, when set, holds every pause until it is closed.
	pauseGate chan struct{}
}

func newFakeAgent() *fakeAgent {
	return &fakeAgent{sbs: map[string]pb.SandboxState{}, files: map[string][]byte{}, fail: map[string]error{}}
}

func (f *fakeAgent) failOn(op string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail[op] = err
}

func (f *fakeAgent) check(op, id string, want ...pb.SandboxState) error {
	if err := f.fail[op]; err != nil {
		return err
	}
	st, ok := f.sbs[id]
	if !ok {
		return errdefs.Errorf(errdefs.ErrNotFound, "sandbox %s", id)
	}
	for _, w := range want {
		if st == w {
			return nil
		}
	}
	if len(want) == 0 {
		return nil
	}
	return errdefs.Errorf(errdefs.ErrConflict, "sandbox %s is %s", id, st)
}

// created returns how many creates arrived and the last one.
func (f *fakeAgent) created() (int, *pb.CreateSandboxRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.creates, f.lastCreate
}

func (f *fakeAgent) live() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sbs)
}

func (f *fakeAgent) CreateSandbox(ctx context.Context, req *pb.CreateSandboxRequest) (*pb.CreateSandboxResponse, error) {
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates++
	f.lastCreate = req
	if err := f.fail["create"]; err != nil {
		return nil, err
	}
	if _, ok := f.sbs[req.GetSandboxId()]; ok {
		return nil, errdefs.Errorf(errdefs.ErrAlreadyExists, "sandbox %s", req.GetSandboxId())
	}
	if req.GetTemplate() == "missing" {
		return nil, errdefs.Errorf(errdefs.ErrNotFound, "template %q", req.GetTemplate())
	}
	f.sbs[req.GetSandboxId()] = pb.SandboxState_SANDBOX_STATE_RUNNING
	return &pb.CreateSandboxResponse{EnvdAccessToken: "tok",
		Sandbox: &pb.Sandbox{SandboxId: req.GetSandboxId(), GuestIp: "169.254.0.21", State: pb.SandboxState_SANDBOX_STATE_RUNNING}}, nil
}

func (f *fakeAgent) DestroySandbox(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("destroy", id); err != nil {
		return err
	}
	delete(f.sbs, id)
	return nil
}

func (f *fakeAgent) PauseSandbox(ctx context.Context, id string) error {
	f.mu.Lock()
	gate := f.pauseGate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("pause", id, pb.SandboxState_SANDBOX_STATE_RUNNING); err != nil {
		return err
	}
	f.sbs[id] = pb.SandboxState_SANDBOX_STATE_PAUSED
	return nil
}

func (f *fakeAgent) ResumeSandbox(ctx context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("resume", id, pb.SandboxState_SANDBOX_STATE_PAUSED, pb.SandboxState_SANDBOX_STATE_HIBERNATED); err != nil {
		return err
	}
	f.sbs[id] = pb.SandboxState_SANDBOX_STATE_RUNNING
	return nil
}

func (f *fakeAgent) HibernateSandbox(ctx context.Context, id string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.check("hibernate", id, pb.SandboxState_SANDBOX_STATE_RUNNING, pb.SandboxState_SANDBOX_STATE_PAUSED); err != nil {
		return "", err
	}
	f.sbs[id] = pb.SandboxState_SANDBOX_STATE_HIBERNATED
	return "local:/snapshots/hib-" + id, nil
}

// state returns what the agent holds sandbox id as.
func (f *fakeAgent) state(id string) pb.SandboxState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sbs[id]
}

// Exec understands "echo ARGS..." (stdout), "fail" (stderr, exit 3) and
// "sleep SECONDS".
func (f *fakeAgent) Exec(ctx context.Context, req *pb.ExecRequest, fn func(*pb.ExecResponse) error) error {
	f.mu.Lock()
	err := f.check("exec", req.GetSandboxId(), pb.SandboxState_SANDBOX_STATE_RUNNING)
	f.mu.Unlock()
	if err != nil {
		return err
	}
	evs := []*pb.ExecResponse{{Event: &pb.ExecResponse_Started{Started: &pb.ExecStarted{Pid: 42}}}}
	code := int32(0)
	switch req.GetCmd() {
	case "echo":
		evs = append(evs, &pb.ExecResponse{Event: &pb.ExecResponse_Stdout{Stdout: []byte(strings.Join(req.GetArgs(), " ") + "\n")}})
	case "fail":
		evs = append(evs, &pb.ExecResponse{Event: &pb.ExecResponse_Stderr{Stderr: []byte("boom\n")}})
		code = 3
	case "sleep":
		d, err := time.ParseDuration(strings.Join(req.GetArgs(), "") + "s")
		if err != nil {
			return errdefs.Errorf(errdefs.ErrInvalidArgument, "sleep %v: %v", req.GetArgs(), err)
		}
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return ctx.Err()
		}
	default:
		return errdefs.Errorf(errdefs.ErrNotFound, "executable %q", req.GetCmd())
	}
	evs = append(evs, &pb.ExecResponse{Event: &pb.ExecResponse_Exit{Exit: &pb.ExecExit{ExitCode: code, Exited: true,
		Status: fmt.Sprintf("exit status %d", code), Duration: durationpb.New(time.Millisecond)}}})
	for _, ev := range evs {
		if err := fn(ev); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeAgent) WriteFile(ctx context.Context, hdr *pb.WriteFileHeader, r io.Reader) (*pb.WriteFileResponse, error) {
	f.mu.Lock()
	err := f.check("write", hdr.GetSandboxId(), pb.SandboxState_SANDBOX_STATE_RUNNING)
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("write file: read body: %w", err)
	}
	f.mu.Lock()
	f.files[hdr.GetSandboxId()+hdr.GetPath()] = b
	f.mu.Unlock()
	return &pb.WriteFileResponse{Path: hdr.GetPath(), BytesWritten: int64(len(b))}, nil
}

func (f *fakeAgent) ReadFile(ctx context.Context, req *pb.ReadFileRequest, first func(int64) error, w io.Writer) (int64, error) {
	f.mu.Lock()
	err := f.check("read", req.GetSandboxId(), pb.SandboxState_SANDBOX_STATE_RUNNING)
	b, ok := f.files[req.GetSandboxId()+req.GetPath()]
	f.mu.Unlock()
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, errdefs.Errorf(errdefs.ErrNotFound, "file %s", req.GetPath())
	}
	if err := first(int64(len(b))); err != nil {
		return 0, err
	}
	return io.Copy(w, bytes.NewReader(b))
}

// fakeAgents serves one fakeAgent per host ID.
type fakeAgents map[string]*fakeAgent

func (a fakeAgents) Agent(hostID string) (Agent, error) {
	f, ok := a[hostID]
	if !ok {
		return nil, errdefs.Errorf(errdefs.ErrUnavailable, "host %s is not connected", hostID)
	}
	return f, nil
}
