package api

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

func TestUpdateSandbox(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	sb := e.create(e.alice, CreateRequest{TimeoutSec: Seconds(60), Metadata: map[string]string{"a": "1"}})
	path := "/v1/sandboxes/" + sb.ID
	tests := []struct {
		name   string
		body   string
		status int
		code   string
		check  func(SandboxView) bool
	}{
		{"timeout", `{"timeout_sec":900}`, 200, "", func(v SandboxView) bool { return v.TimeoutSec == 900 && v.Metadata["a"] == "1" }},
		{"never", `{"timeout_sec":0}`, 200, "", func(v SandboxView) bool { return v.TimeoutSec == 0 }},
		{"metadata replaces", `{"metadata":{"b":"2"}}`, 200, "", func(v SandboxView) bool {
			return v.TimeoutSec == 0 && len(v.Metadata) == 1 && v.Metadata["b"] == "2"
		}},
		{"both", `{"timeout_sec":30,"metadata":{}}`, 200, "", func(v SandboxView) bool { return v.TimeoutSec == 30 && len(v.Metadata) == 0 }},
		{"nothing", `{}`, 400, CodeInvalidRequest, nil},
		{"negative", `{"timeout_sec":-5}`, 400, CodeInvalidRequest, nil},
		{"too long", `{"timeout_sec":86401}`, 400, CodeInvalidRequest, nil},
		{"bad metadata key", `{"metadata":{"":"x"}}`, 400, CodeInvalidRequest, nil},
		{"unknown field", `{"status":"running"}`, 400, CodeInvalidRequest, nil},
		{"not json", `timeout`, 400, CodeInvalidRequest, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("PATCH", path, e.alice, tc.body)
			if r.status != tc.status || (tc.code != "" && r.errCode() != tc.code) {
				t.Fatalf("%d %s, want %d %s", r.status, r.body, tc.status, tc.code)
			}
			if tc.check != nil {
				v := decode[SandboxView](t, r)
				got := decode[SandboxView](t, e.do("GET", path, e.alice, nil))
				if !tc.check(v) || !tc.check(got) {
					t.Errorf("returned %+v, stored %+v", v, got)
				}
			}
		})
	}
	t.Run("new timeout restarts the idle period", func(t *testing.T) {
		if _, err := e.st.Pool().Exec(ctx, `UPDATE sandboxes SET last_active_at = now() - interval '1 hour' WHERE id = $1`, sb.ID); err != nil {
			t.Fatal(err)
		}
		if idle, _ := e.st.StillIdle(ctx, sb.ID); !idle {
			t.Fatal("setup: not idle")
		}
		if r := e.do("PATCH", path, e.alice, `{"timeout_sec":120}`); r.status != http.StatusOK {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if idle, _ := e.st.StillIdle(ctx, sb.ID); idle {
			t.Error("still idle after a new timeout")
		}
	})
	t.Run("stopped", func(t *testing.T) {
		if r := e.do("DELETE", path, e.alice, nil); r.status != http.StatusNoContent {
			t.Fatalf("delete: %d", r.status)
		}
		r := e.do("PATCH", path, e.alice, `{"timeout_sec":10}`)
		if r.status != http.StatusConflict || !strings.Contains(string(r.body), "stopped") {
			t.Errorf("%d %s, want 409 saying stopped", r.status, r.body)
		}
	})
	if r := e.do("PATCH", path, "", `{"timeout_sec":10}`); r.status != http.StatusUnauthorized {
		t.Errorf("no key: %d", r.status)
	}
}

// Two state changes on one sandbox never interleave: the second is a
// conflict that says what is in progress; a failed one frees the sandbox.
func TestStateChangesDoNotInterleave(t *testing.T) {
	e := newEnv(t, Config{})
	sb := e.create(e.alice, CreateRequest{})
	base := "/v1/sandboxes/" + sb.ID
	gate := make(chan struct{})
	e.agent.mu.Lock()
	e.agent.pauseGate = gate
	e.agent.mu.Unlock()
	done := make(chan resp, 1)
	go func() { done <- e.do("POST", base+"/pause", e.alice, nil) }()
	deadline := time.Now().Add(5 * time.Second)
	for { // until the pause holds the lease (it then waits at the gate)
		var op *string
		if err := e.st.Pool().QueryRow(context.Background(), `SELECT op FROM sandboxes WHERE id = $1`, sb.ID).Scan(&op); err != nil {
			t.Fatal(err)
		}
		if op != nil && *op == "pause" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the pause never took the lease")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if r := e.do("POST", base+"/hibernate", e.alice, nil); r.status != http.StatusConflict ||
		!strings.Contains(string(r.body), "busy: pause in progress") {
		t.Fatalf("hibernate during a pause: %d %s", r.status, r.body)
	}
	close(gate)
	if r := <-done; r.status != http.StatusOK {
		t.Fatalf("pause: %d %s", r.status, r.body)
	}
	if st := e.agent.state(sb.ID); st != pb.SandboxState_SANDBOX_STATE_PAUSED {
		t.Fatalf("agent holds %s", st)
	}
	// A failed agent call leaves the status and frees the sandbox.
	e.agent.failOn("resume", errdefs.Errorf(errdefs.ErrUnavailable, "agent restarting"))
	if r := e.do("POST", base+"/resume", e.alice, nil); r.status != http.StatusServiceUnavailable {
		t.Fatalf("failing resume: %d %s", r.status, r.body)
	}
	e.agent.failOn("resume", nil)
	if r := e.do("POST", base+"/resume", e.alice, nil); r.status != http.StatusOK {
		t.Fatalf("resume after the failure: %d %s", r.status, r.body)
	}
}
