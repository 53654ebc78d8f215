package api

import (
	"context"
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

// Agent failures on a running sandbox: each maps to its code and leaves
// the sandbox's recorded state alone.
func TestAgentErrorPaths(t *testing.T) {
	tests := []struct {
		name, op, method, path string
		body                   any
		fail                   error
		status                 int
		code                   string
	}{
		{"pause host down", "pause", "POST", "/pause", nil, errdefs.Errorf(errdefs.ErrUnavailable, "down"), 503, CodeHostUnavailable},
		{"pause refused", "pause", "POST", "/pause", nil, errdefs.Errorf(errdefs.ErrConflict, "busy"), 409, CodeConflict},
		{"delete host down", "destroy", "DELETE", "", nil, errdefs.Errorf(errdefs.ErrUnavailable, "down"), 503, CodeHostUnavailable},
		{"exec host down", "exec", "POST", "/exec", ExecRequest{Cmd: "echo"}, errdefs.Errorf(errdefs.ErrUnavailable, "down"), 503, CodeHostUnavailable},
		{"exec timeout", "exec", "POST", "/exec", ExecRequest{Cmd: "echo"}, errdefs.Errorf(errdefs.ErrDeadlineExceeded, "slow"), 504, CodeHostUnavailable},
		{"write denied", "write", "PUT", "/files?path=/etc/x", "x", errdefs.Errorf(errdefs.ErrPermissionDenied, "read-only"), 403, CodeForbidden},
		{"write bad path", "write", "PUT", "/files?path=rel", "x", errdefs.Errorf(errdefs.ErrInvalidArgument, "bad path"), 400, CodeInvalidRequest},
		{"read internal", "read", "GET", "/files/x", nil, errdefs.Errorf(errdefs.ErrInternal, "secret detail"), 500, CodeInternal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Config{})
			sb := e.create(e.alice, CreateRequest{})
			e.agent.failOn(tc.op, tc.fail)
			r := e.do(tc.method, "/v1/sandboxes/"+sb.ID+tc.path, e.alice, tc.body)
			if r.status != tc.status || r.errCode() != tc.code {
				t.Fatalf("%d %s", r.status, r.body)
			}
			got, err := e.st.GetSandbox(context.Background(), store.AdminScope, sb.ID)
			if err != nil || got.Status != models.StatusRunning {
				t.Fatalf("status after failure: %s %v", got.Status, err)
			}
		})
	}
}

// A sandbox in error whose host is gone can still be deleted, and its
// pool is released.
func TestDeleteErroredOnGoneHost(t *testing.T) {
	e := newEnv(t, Config{})
	sb := e.create(e.alice, CreateRequest{})
	if _, err := e.st.MarkError(context.Background(), sb.ID, "host lost"); err != nil {
		t.Fatal(err)
	}
	e.agent.failOn("destroy", errdefs.Errorf(errdefs.ErrUnavailable, "down"))
	if r := e.do("DELETE", "/v1/sandboxes/"+sb.ID, e.alice, nil); r.status != 204 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	got := decode[SandboxView](t, e.do("GET", "/v1/sandboxes/"+sb.ID, e.alice, nil))
	if got.Status != models.StatusStopped {
		t.Fatalf("status %s", got.Status)
	}
	if u := e.used("alice"); u != (store.Pool{}) {
		t.Fatalf("pool %+v", u)
	}
}
