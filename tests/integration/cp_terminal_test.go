package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/wrenn-dev/wrenn-sandbox/internal/api"
)

// The WebSocket terminal through the control plane to a real VM: output,
// resize and the exit message.
func TestCPTerminalRealAgent(t *testing.T) {
	e := newCPEnv(t)
	key := e.key("alice", nil)
	sb := e.create(key, map[string]any{"template": "minimal", "memory_mb": 256})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/v1/sandboxes/" + sb.ID + "/terminal?cols=100&rows=30"
	conn, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"X-API-Key": {key}}})
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer conn.CloseNow()
	resize, _ := json.Marshal(api.TermControl{Type: "resize", Cols: 91, Rows: 17})
	if err := conn.Write(ctx, websocket.MessageText, resize); err != nil {
		t.Fatal(err)
	}
	if err := conn.Write(ctx, websocket.MessageBinary, []byte("sleep 0.3; stty size; echo marker-$((6*7)); exit 5\n")); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	var exit *api.TermControl
	started := false
	for exit == nil {
		typ, msg, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v; output so far %q", err, out.String())
		}
		if typ == websocket.MessageBinary {
			out.Write(msg)
			continue
		}
		var c api.TermControl
		if err := json.Unmarshal(msg, &c); err != nil {
			t.Fatal(err)
		}
		switch c.Type {
		case "started":
			started = true
		case "exit":
			exit = &c
		default:
			t.Fatalf("control %s", msg)
		}
	}
	if !started || exit.ExitCode == nil || *exit.ExitCode != 5 {
		t.Fatalf("started %v exit %+v", started, exit)
	}
	if !strings.Contains(out.String(), "marker-42") || !strings.Contains(out.String(), "17 91") {
		t.Fatalf("output %q", out.String())
	}
	if _, _, err := conn.Read(ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		t.Fatalf("close: %v", err)
	}
	if code, _ := e.do("DELETE", "/v1/sandboxes/"+sb.ID, key, nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
}
