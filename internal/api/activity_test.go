package api

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

// Exec, upload and download mark the sandbox active for the idle timer;
// a refused request (sandbox paused) does not.
func TestActivityRecorded(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	sb := e.create(e.alice, CreateRequest{TimeoutSec: Seconds(60)})
	base := "/v1/sandboxes/" + sb.ID
	makeIdle := func() {
		t.Helper()
		if _, err := e.st.Pool().Exec(ctx, `UPDATE sandboxes SET last_active_at = now() - interval '1 hour' WHERE id = $1`, sb.ID); err != nil {
			t.Fatal(err)
		}
		if idle, err := e.st.StillIdle(ctx, sb.ID); err != nil || !idle {
			t.Fatalf("not idle after backdating: %v %v", idle, err)
		}
	}
	ops := []struct {
		name   string
		method string
		path   string
		body   any
		status int
	}{
		{"exec", "POST", base + "/exec", ExecRequest{Cmd: "echo", Args: []string{"hi"}}, http.StatusOK},
		{"upload", "PUT", base + "/files?path=/tmp/a", "data", http.StatusOK},
		{"download", "GET", base + "/files/tmp/a", nil, http.StatusOK},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			makeIdle()
			if r := e.do(op.method, op.path, e.alice, op.body); r.status != op.status {
				t.Fatalf("%d %s", r.status, r.body)
			}
			if err := e.activity.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if idle, err := e.st.StillIdle(ctx, sb.ID); err != nil || idle {
				t.Errorf("still idle after %s: %v %v", op.name, idle, err)
			}
		})
	}
	t.Run("refused while paused", func(t *testing.T) {
		if r := e.do("POST", base+"/pause", e.alice, nil); r.status != http.StatusOK {
			t.Fatalf("pause: %d %s", r.status, r.body)
		}
		before, err := e.st.GetSandbox(ctx, store.AdminScope, sb.ID)
		if err != nil {
			t.Fatal(err)
		}
		if r := e.do("POST", base+"/exec", e.alice, ExecRequest{Cmd: "echo"}); r.status != http.StatusConflict {
			t.Fatalf("exec while paused: %d %s", r.status, r.body)
		}
		if n := e.activity.Pending(); n != 0 {
			t.Errorf("a refused exec marked %d sandboxes active", n)
		}
		if err := e.activity.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		after, _ := e.st.GetSandbox(ctx, store.AdminScope, sb.ID)
		if !after.LastActiveAt.Equal(before.LastActiveAt) {
			t.Errorf("refused exec moved last_active_at %v -> %v", before.LastActiveAt, after.LastActiveAt)
		}
	})
}

// A long operation keeps marking its sandbox while it runs.
func TestActivityDuringLongExec(t *testing.T) {
	e := newEnv(t, Config{ActivityEvery: 20 * time.Millisecond})
	ctx := context.Background()
	sb := e.create(e.alice, CreateRequest{TimeoutSec: Seconds(60)})
	done := make(chan resp, 1)
	go func() {
		done <- e.do("POST", "/v1/sandboxes/"+sb.ID+"/exec", e.alice, ExecRequest{Cmd: "sleep", Args: []string{"0.5"}})
	}()
	time.Sleep(150 * time.Millisecond) // the start touch is pending now
	if err := e.activity.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Pool().Exec(ctx, `UPDATE sandboxes SET last_active_at = now() - interval '1 hour' WHERE id = $1`, sb.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // several ticks while exec runs
	if err := e.activity.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if idle, err := e.st.StillIdle(ctx, sb.ID); err != nil || idle {
		t.Errorf("idle while a command runs: %v %v", idle, err)
	}
	if r := <-done; r.status != http.StatusOK {
		t.Fatalf("exec: %d %s", r.status, r.body)
	}
}

func TestExtraCollectors(t *testing.T) {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "wrenn_test_extra_total", Help: "test"})
	c.Add(3)
	e := newEnv(t, Config{}, func(d *Deps) { d.Collectors = append(d.Collectors, c) })
	if v, ok := value(e.scrape(), "wrenn_test_extra_total", map[string]string{}); !ok || v != 3 {
		t.Errorf("extra collector: %v %v", v, ok)
	}
}
