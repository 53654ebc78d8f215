package api

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

func TestSandboxLifecycle(t *testing.T) {
	e := newEnv(t, Config{})
	sb := e.create(e.alice, CreateRequest{Template: "minimal", VCPUs: 1, MemoryMB: 256, Metadata: map[string]string{"team": "x"}})
	if !strings.HasPrefix(sb.ID, "sb-") || len(sb.ID) != 11 || sb.Status != models.StatusRunning ||
		sb.HostID != testHost || sb.MemoryMB != 256 || sb.Metadata["team"] != "x" || sb.OwnerID != "alice" {
		t.Fatalf("created %+v", sb)
	}
	if u := e.used("alice"); u.VCPUs != 1 || u.MemoryMB != 256 {
		t.Fatalf("pool used %+v", u)
	}
	base := "/v1/sandboxes/" + sb.ID
	steps := []struct {
		name, method, path string
		body               any
		hdr                []string
		status             int
		code               string
		contains           string
	}{
		{"get", "GET", base, nil, nil, 200, "", `"status":"running"`},
		{"exec", "POST", base + "/exec", ExecRequest{Cmd: "echo", Args: []string{"hello"}}, nil, 200, "", `"stdout":"hello\n"`},
		{"exec exit code", "POST", base + "/exec", ExecRequest{Cmd: "fail"}, nil, 200, "", `"exit_code":3`},
		{"exec unknown cmd", "POST", base + "/exec", ExecRequest{Cmd: "nope"}, nil, 404, CodeNotFound, ""},
		{"exec no cmd", "POST", base + "/exec", ExecRequest{}, nil, 400, CodeInvalidRequest, ""},
		{"exec bad timeout", "POST", base + "/exec", ExecRequest{Cmd: "echo", TimeoutSec: -1}, nil, 400, CodeInvalidRequest, ""},
		{"upload", "PUT", base + "/files?path=/tmp/a.txt", "data!", nil, 200, "", `"bytes_written":5`},
		{"upload no path", "PUT", base + "/files", "x", nil, 400, CodeInvalidRequest, ""},
		{"upload bad mode", "PUT", base + "/files?path=/x&mode=99", "x", nil, 400, CodeInvalidRequest, ""},
		{"download", "GET", base + "/files/tmp/a.txt", nil, nil, 200, "", "data!"},
		{"download missing", "GET", base + "/files/tmp/b.txt", nil, nil, 404, CodeNotFound, ""},
		{"resume running", "POST", base + "/resume", nil, nil, 409, CodeConflict, ""},
		{"pause", "POST", base + "/pause", nil, nil, 200, "", `"status":"paused"`},
		{"pause again", "POST", base + "/pause", nil, nil, 409, CodeConflict, ""},
		{"exec paused", "POST", base + "/exec", ExecRequest{Cmd: "echo"}, nil, 409, CodeConflict, ""},
		{"download paused", "GET", base + "/files/tmp/a.txt", nil, nil, 409, CodeConflict, ""},
		{"resume", "POST", base + "/resume", nil, nil, 200, "", `"status":"running"`},
		{"hibernate running", "POST", base + "/hibernate", nil, nil, 200, "", `"status":"hibernated"`},
		{"hibernate again", "POST", base + "/hibernate", nil, nil, 409, CodeConflict, ""},
		{"pause hibernated", "POST", base + "/pause", nil, nil, 409, CodeConflict, ""},
		{"exec hibernated", "POST", base + "/exec", ExecRequest{Cmd: "echo"}, nil, 409, CodeConflict, ""},
		{"wake", "POST", base + "/resume", nil, nil, 200, "", `"status":"running"`},
		{"download after wake", "GET", base + "/files/tmp/a.txt", nil, nil, 200, "", "data!"},
		{"pause before hibernate", "POST", base + "/pause", nil, nil, 200, "", `"status":"paused"`},
		{"hibernate paused", "POST", base + "/hibernate", nil, nil, 200, "", `"status":"hibernated"`},
		{"wake again", "POST", base + "/resume", nil, nil, 200, "", `"status":"running"`},
		{"list", "GET", "/v1/sandboxes?status=running&metadata=team=x", nil, nil, 200, "", sb.ID},
		{"list other template", "GET", "/v1/sandboxes?template=python311", nil, nil, 200, "", `"sandboxes":[]`},
		{"list bad status", "GET", "/v1/sandboxes?status=sleeping", nil, nil, 400, CodeInvalidRequest, ""},
		{"list bad limit", "GET", "/v1/sandboxes?limit=0", nil, nil, 400, CodeInvalidRequest, ""},
		{"list bad token", "GET", "/v1/sandboxes?page_token=zzz", nil, nil, 400, CodeInvalidRequest, ""},
		{"delete", "DELETE", base, nil, nil, 204, "", ""},
		{"delete again", "DELETE", base, nil, nil, 204, "", ""},
		{"get stopped", "GET", base, nil, nil, 200, "", `"status":"stopped"`},
		{"pause stopped", "POST", base + "/pause", nil, nil, 409, CodeConflict, ""},
		{"hibernate stopped", "POST", base + "/hibernate", nil, nil, 409, CodeConflict, ""},
		{"bad id", "GET", "/v1/sandboxes/nope", nil, nil, 404, CodeNotFound, ""},
		{"unknown route", "GET", "/v1/nothing", nil, nil, 404, CodeNotFound, ""},
		{"bad method", "PUT", base, nil, nil, 405, CodeInvalidRequest, ""},
	}
	for _, s := range steps {
		r := e.do(s.method, s.path, e.alice, s.body, s.hdr...)
		if r.status != s.status || r.errCode() != s.code || !strings.Contains(string(r.body), s.contains) {
			t.Fatalf("%s: %d %s; want %d %q containing %q", s.name, r.status, r.body, s.status, s.code, s.contains)
		}
	}
	if u := e.used("alice"); u != (store.Pool{}) {
		t.Fatalf("pool after delete %+v", u)
	}
	if e.agent.live() != 0 {
		t.Fatalf("agent still has %d sandboxes", e.agent.live())
	}
	// Audit: the 3 execs that reached the agent (one failed), 1 upload and
	// 3 downloads (one failed) were recorded; refused requests were not.
	if err := e.audit.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	evs, err := e.st.ListAuditEvents(context.Background(), store.AdminScope, store.AuditFilter{SandboxID: sb.ID})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, ev := range evs {
		count[ev.Type]++
	}
	if count[store.AuditExec] != 3 || count[store.AuditFileWrite] != 1 || count[store.AuditFileRead] != 3 {
		t.Fatalf("audit events %v", count)
	}
}

func TestExecStream(t *testing.T) {
	e := newEnv(t, Config{})
	sb := e.create(e.alice, CreateRequest{})
	r := e.do("POST", "/v1/sandboxes/"+sb.ID+"/exec", e.alice, ExecRequest{Cmd: "echo", Args: []string{"hi"}},
		"Accept", "text/event-stream")
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("%d %v %s", r.status, r.header, r.body)
	}
	var events []string
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	for sc.Scan() {
		if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			events = append(events, ev)
		}
	}
	if got := strings.Join(events, ","); got != "start,stdout,exit" {
		t.Fatalf("events %s; body %s", got, r.body)
	}
	// "hi\n" in base64.
	if !strings.Contains(string(r.body), `{"data":"aGkK"}`) {
		t.Fatalf("stdout event: %s", r.body)
	}
}

// Table of agent failures during create: each must end in the mapped
// error, the sandbox in error state and the pool released.
func TestCreateFailures(t *testing.T) {
	tests := []struct {
		name   string
		req    CreateRequest
		fail   error
		status int
		code   string
	}{
		{"host full", CreateRequest{}, errdefs.Errorf(errdefs.ErrResourceExhausted, "no memory"), 503, CodeHostUnavailable},
		{"agent down", CreateRequest{}, errdefs.Errorf(errdefs.ErrUnavailable, "connection refused"), 503, CodeHostUnavailable},
		{"agent bug", CreateRequest{}, errdefs.Errorf(errdefs.ErrInternal, "boom"), 500, CodeInternal},
		{"unknown template", CreateRequest{Template: "missing"}, nil, 404, CodeNotFound},
		{"timeout", CreateRequest{}, errdefs.Errorf(errdefs.ErrDeadlineExceeded, "boot"), 504, CodeHostUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Config{})
			if tc.fail != nil {
				e.agent.failOn("create", tc.fail)
			}
			r := e.do("POST", "/v1/sandboxes", e.alice, tc.req)
			if r.status != tc.status || r.errCode() != tc.code {
				t.Fatalf("%d %s; want %d %s", r.status, r.body, tc.status, tc.code)
			}
			if tc.code == CodeInternal && strings.Contains(string(r.body), "boom") {
				t.Fatalf("internal cause leaked: %s", r.body)
			}
			if u := e.used("alice"); u != (store.Pool{}) {
				t.Fatalf("pool leaked: %+v", u)
			}
			page := decode[ListResponse](t, e.do("GET", "/v1/sandboxes", e.alice, nil))
			if len(page.Sandboxes) != 1 || page.Sandboxes[0].Status != models.StatusError || page.Sandboxes[0].Error == "" {
				t.Fatalf("sandboxes after failed create: %+v", page.Sandboxes)
			}
			if e.agent.live() != 0 {
				t.Fatal("agent kept a sandbox")
			}
		})
	}
}

func TestCreateValidation(t *testing.T) {
	e := newEnv(t, Config{})
	long := strings.Repeat("v", 2000)
	bodies := []struct {
		name, body string
		status     int
		code       string
	}{
		{"empty body uses defaults", ``, 201, ""},
		{"not json", `{`, 400, CodeInvalidRequest},
		{"array", `[]`, 400, CodeInvalidRequest},
		{"unknown field", `{"cpus":1}`, 400, CodeInvalidRequest},
		{"trailing", `{} {}`, 400, CodeInvalidRequest},
		{"bad template", `{"template":"../etc"}`, 400, CodeInvalidRequest},
		{"vcpus", `{"vcpus":65}`, 400, CodeInvalidRequest},
		{"negative vcpus", `{"vcpus":-1}`, 400, CodeInvalidRequest},
		{"memory", `{"memory_mb":10}`, 400, CodeInvalidRequest},
		{"timeout", `{"timeout_sec":-5}`, 400, CodeInvalidRequest},
		{"metadata value", `{"metadata":{"k":"` + long + `"}}`, 400, CodeInvalidRequest},
		{"env key", `{"envs":{"1BAD":"x"}}`, 400, CodeInvalidRequest},
		{"wrong type", `{"vcpus":"two"}`, 400, CodeInvalidRequest},
	}
	for _, b := range bodies {
		r := e.do("POST", "/v1/sandboxes", e.alice, b.body)
		if r.status != b.status || r.errCode() != b.code {
			t.Fatalf("%s: %d %s", b.name, r.status, r.body)
		}
	}
}

func TestNoHost(t *testing.T) {
	e := newEnv(t, Config{})
	if err := e.st.SetHostStatus(context.Background(), testHost, models.HostUnhealthy); err != nil {
		t.Fatal(err)
	}
	r := e.do("POST", "/v1/sandboxes", e.alice, CreateRequest{})
	if r.status != 503 || r.errCode() != CodeHostUnavailable {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if u := e.used("alice"); u != (store.Pool{}) {
		t.Fatalf("pool leaked: %+v", u)
	}
}

// 50 concurrent creates against a pool that fits 5: exactly 5 succeed,
// 45 are pool_exhausted, and the pool is free after cleanup. Handler
// level with the in-process agent; each agent create takes 50 ms so the
// requests really overlap.
func TestQuotaRace(t *testing.T) {
	e := newEnv(t, Config{})
	e.agent.delay = 50 * time.Millisecond
	carol := e.key(CreateKeyRequest{OwnerID: "carol", Pool: &store.Pool{VCPUs: 5, MemoryMB: 5 * 256, StorageMB: 1000}}).Key
	var wg sync.WaitGroup
	results := make([]resp, 50)
	for i := range results {
		wg.Go(func() { results[i] = e.do("POST", "/v1/sandboxes", carol, CreateRequest{VCPUs: 1, MemoryMB: 256}) })
	}
	wg.Wait()
	var ok []string
	exhausted := 0
	for _, r := range results {
		switch {
		case r.status == 201:
			ok = append(ok, decode[SandboxView](t, r).ID)
		case r.status == 429 && r.errCode() == CodePoolExhausted:
			exhausted++
		default:
			t.Errorf("unexpected %d %s", r.status, r.body)
		}
	}
	if len(ok) != 5 || exhausted != 45 {
		t.Fatalf("%d created, %d pool_exhausted", len(ok), exhausted)
	}
	if u := e.used("carol"); u.VCPUs != 5 || u.MemoryMB != 1280 {
		t.Fatalf("used %+v", u)
	}
	for _, id := range ok {
		if r := e.do("DELETE", "/v1/sandboxes/"+id, carol, nil); r.status != 204 {
			t.Fatalf("delete %s: %d %s", id, r.status, r.body)
		}
	}
	if u := e.used("carol"); u != (store.Pool{}) {
		t.Fatalf("pool after cleanup %+v", u)
	}
	drift, err := e.st.CheckPools(context.Background())
	if err != nil || len(drift) != 0 {
		t.Fatalf("pool drift %v %v", drift, err)
	}
	if e.agent.live() != 0 {
		t.Fatal("agent kept sandboxes")
	}
}

func TestOversizeBodies(t *testing.T) {
	e := newEnv(t, Config{MaxJSONBytes: 1024, MaxUploadBytes: 4096})
	sb := e.create(e.alice, CreateRequest{})
	big := `{"metadata":{"k":"` + strings.Repeat("x", 2048) + `"}}`
	tests := []struct {
		name, method, path string
		body               any
	}{
		{"create", "POST", "/v1/sandboxes", big},
		{"exec", "POST", "/v1/sandboxes/" + sb.ID + "/exec", `{"cmd":"echo","args":["` + strings.Repeat("a", 2048) + `"]}`},
		{"upload with length", "PUT", "/v1/sandboxes/" + sb.ID + "/files?path=/x", bytes.Repeat([]byte("z"), 5000)},
		// No Content-Length: the limit is hit while streaming.
		{"upload chunked", "PUT", "/v1/sandboxes/" + sb.ID + "/files?path=/y", struct{ *bytes.Reader }{bytes.NewReader(bytes.Repeat([]byte("z"), 5000))}},
		{"keys", "POST", "/v1/keys", `{"owner_id":"` + strings.Repeat("o", 2048) + `"}`},
	}
	for _, tc := range tests {
		key := e.alice
		if tc.name == "keys" {
			key = e.admin
		}
		r := e.do(tc.method, tc.path, key, tc.body)
		if r.status != http.StatusRequestEntityTooLarge || r.errCode() != CodePayloadTooLarge {
			t.Fatalf("%s: %d %s", tc.name, r.status, r.body)
		}
	}
	// Within the limit still works.
	if r := e.do("PUT", "/v1/sandboxes/"+sb.ID+"/files?path=/ok", e.alice, bytes.Repeat([]byte("z"), 4096)); r.status != 200 {
		t.Fatalf("upload at the limit: %d %s", r.status, r.body)
	}
}

func TestFilePathRoundTrip(t *testing.T) {
	e := newEnv(t, Config{})
	sb := e.create(e.alice, CreateRequest{})
	for _, p := range []string{"/a b/ü.txt", "/deep/er/x", "/with%20escape"} {
		q := "/v1/sandboxes/" + sb.ID + "/files?path=" + urlQueryEscape(p)
		if r := e.do("PUT", q, e.alice, "c:"+p); r.status != 200 {
			t.Fatalf("put %q: %d %s", p, r.status, r.body)
		}
		r := e.do("GET", "/v1/sandboxes/"+sb.ID+"/files"+urlPathEscape(p), e.alice, nil)
		if r.status != 200 || string(r.body) != "c:"+p {
			t.Fatalf("get %q: %d %q", p, r.status, r.body)
		}
	}
}

func ExampleErrorBody() {
	fmt.Println(classifyCode(errdefs.ErrPoolExhausted))
	// Output: 429 pool_exhausted
}

func classifyCode(err error) string {
	s, c, _ := classify(err)
	return fmt.Sprint(s, " ", c)
}
