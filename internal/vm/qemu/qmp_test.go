package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// fakeQMP is a QMP server that behaves like QEMU 7.2's monitor on the
// points the client depends on: greeting first, capabilities negotiation
// required before anything else, ids echoed, events interleaved, error
// classes, and quit sending SHUTDOWN and closing before its reply.
type fakeQMP struct {
	t  *testing.T
	ln net.Listener

	mu       sync.Mutex
	received []string
	status   string
}

func newFakeQMP(t *testing.T) *fakeQMP {
	t.Helper()
	path := filepath.Join(t.TempDir(), "qmp.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeQMP{t: t, ln: ln, status: "running"}
	t.Cleanup(func() { ln.Close() })
	go f.serve()
	return f
}

func (f *fakeQMP) path() string { return f.ln.Addr().String() }

func (f *fakeQMP) serve() {
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		go f.handle(c)
	}
}

func (f *fakeQMP) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.received...)
}

func (f *fakeQMP) handle(c net.Conn) {
	defer c.Close()
	var wmu sync.Mutex
	send := func(v any) {
		b, _ := json.Marshal(v)
		wmu.Lock()
		c.Write(append(b, '\r', '\n'))
		wmu.Unlock()
	}
	event := func(name string, data any) {
		send(map[string]any{"event": name, "data": data,
			"timestamp": map[string]int64{"seconds": 1700000000, "microseconds": 5}})
	}
	send(map[string]any{"QMP": map[string]any{
		"version":      map[string]any{"qemu": map[string]int{"major": 7, "minor": 2, "micro": 22}, "package": "Debian 1:7.2+dfsg-7+deb12u18"},
		"capabilities": []string{"oob"},
	}})
	negotiated := false
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		var cmd struct {
			Execute   string          `json:"execute"`
			Arguments json.RawMessage `json:"arguments"`
			ID        any             `json:"id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
			send(map[string]any{"error": map[string]string{"class": "GenericError", "desc": "JSON parse error"}})
			continue
		}
		f.mu.Lock()
		f.received = append(f.received, cmd.Execute)
		f.mu.Unlock()
		reply := func(ret any) { send(map[string]any{"return": ret, "id": cmd.ID}) }
		fail := func(class, desc string) {
			send(map[string]any{"error": map[string]string{"class": class, "desc": desc}, "id": cmd.ID})
		}
		if !negotiated && cmd.Execute != "qmp_capabilities" {
			fail("CommandNotFound", "Expecting capabilities negotiation with 'qmp_capabilities'")
			continue
		}
		switch cmd.Execute {
		case "qmp_capabilities":
			negotiated = true
			reply(map[string]any{})
		case "stop":
			f.mu.Lock()
			f.status = "paused"
			f.mu.Unlock()
			reply(map[string]any{})
			event("STOP", nil)
		case "cont":
			event("RESUME", nil)
			f.mu.Lock()
			f.status = "running"
			f.mu.Unlock()
			reply(map[string]any{})
		case "query-status":
			f.mu.Lock()
			st := f.status
			f.mu.Unlock()
			event("NOISE", map[string]int{"n": 1})
			reply(map[string]any{"status": st, "singlestep": false, "running": st == "running"})
		case "slow":
			// Replies out of order: after the next command's reply.
			go func(id any) {
				time.Sleep(50 * time.Millisecond)
				send(map[string]any{"return": map[string]string{"who": "slow"}, "id": id})
			}(cmd.ID)
		case "migrate":
			fail("GenericError", "Parameter 'uri' expects a valid migration protocol")
		case "hang":
			// never answers
		case "quit":
			event("SHUTDOWN", map[string]any{"guest": false, "reason": "host-qmp-quit"})
			return // closes before the reply, as QEMU may
		default:
			fail("CommandNotFound", "The command "+cmd.Execute+" has not been found")
		}
	}
}

func TestQMP(t *testing.T) {
	f := newFakeQMP(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q, err := DialQMP(ctx, f.path())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if got := q.Version().String(); got != "7.2.22" {
		t.Errorf("version %q, want 7.2.22", got)
	}
	if cmds := f.commands(); len(cmds) != 1 || cmds[0] != "qmp_capabilities" {
		t.Errorf("first commands %v, want [qmp_capabilities]", cmds)
	}

	events, unsub := q.Subscribe()
	defer unsub()

	tests := []struct {
		name      string
		cmd       string
		wantClass string
		wantEvent string
	}{
		{name: "stop emits STOP", cmd: "stop", wantEvent: "STOP"},
		{name: "cont emits RESUME before reply", cmd: "cont", wantEvent: "RESUME"},
		{name: "error class kept", cmd: "migrate", wantClass: "GenericError"},
		{name: "unknown command", cmd: "nope", wantClass: "CommandNotFound"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := q.Execute(ctx, tc.cmd, nil, nil)
			if tc.wantClass != "" {
				var qe *QMPError
				if !errors.As(err, &qe) || qe.Class != tc.wantClass || qe.Command != tc.cmd {
					t.Fatalf("err %v, want QMPError class %s", err, tc.wantClass)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			select {
			case ev := <-events:
				if ev.Name != tc.wantEvent {
					t.Errorf("event %s, want %s", ev.Name, tc.wantEvent)
				}
				if ev.Time.Unix() != 1700000000 {
					t.Errorf("event time %v", ev.Time)
				}
			case <-time.After(2 * time.Second):
				t.Errorf("no %s event", tc.wantEvent)
			}
		})
	}

	t.Run("status decoded with interleaved event", func(t *testing.T) {
		st, err := q.QueryStatus(ctx)
		if err != nil || st.Status != "running" || !st.Running {
			t.Fatalf("status %+v err %v", st, err)
		}
	})

	t.Run("concurrent replies routed by id", func(t *testing.T) {
		var slow struct{ Who string }
		done := make(chan error, 1)
		go func() { done <- q.Execute(ctx, "slow", nil, &slow) }()
		time.Sleep(10 * time.Millisecond)
		st, err := q.QueryStatus(ctx)
		if err != nil || st.Status == "" {
			t.Fatalf("status %+v err %v", st, err)
		}
		if err := <-done; err != nil || slow.Who != "slow" {
			t.Fatalf("slow reply %+v err %v", slow, err)
		}
	})

	t.Run("context ends a command with no reply", func(t *testing.T) {
		cctx, ccancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer ccancel()
		if err := q.Execute(cctx, "hang", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v, want deadline exceeded", err)
		}
	})

	t.Run("quit succeeds when the socket closes before the reply", func(t *testing.T) {
		if err := q.Quit(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case <-q.Done():
		case <-time.After(2 * time.Second):
			t.Fatal("connection not done after quit")
		}
		if err := q.Execute(ctx, "query-status", nil, nil); !errors.Is(err, ErrQMPClosed) {
			t.Fatalf("after close: %v, want ErrQMPClosed", err)
		}
		if _, ok := <-events; ok {
			// SHUTDOWN may still be buffered; the channel must then close.
			for range events {
			}
		}
	})
}

func TestQMPGreetingRequired(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write([]byte(`{"return": {}}` + "\n"))
		time.Sleep(100 * time.Millisecond)
		c.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if q, err := DialQMP(ctx, path); err == nil {
		q.Close()
		t.Fatal("dial succeeded without a greeting")
	}
}
