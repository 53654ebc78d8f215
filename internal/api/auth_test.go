package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/auth"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

func TestAuthentication(t *testing.T) {
	e := newEnv(t, Config{})
	revoked := e.key(CreateKeyRequest{OwnerID: "alice"})
	if _, err := e.st.RevokeAPIKey(context.Background(), store.AdminScope, revoked.ID); err != nil {
		t.Fatal(err)
	}
	unknown, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, method, path, key string
		status                  int
		code                    string
	}{
		{"no key", "GET", "/v1/sandboxes", "", 401, CodeUnauthorized},
		{"garbage", "GET", "/v1/sandboxes", "hello", 401, CodeUnauthorized},
		{"unknown", "GET", "/v1/sandboxes", unknown.Plaintext, 401, CodeUnauthorized},
		{"revoked", "GET", "/v1/sandboxes", revoked.Key, 401, CodeUnauthorized},
		{"revoked admin route", "GET", "/v1/keys", revoked.Key, 401, CodeUnauthorized},
		{"user on hosts", "GET", "/v1/hosts", e.alice, 403, CodeForbidden},
		{"user on keys", "GET", "/v1/keys", e.alice, 403, CodeForbidden},
		{"user creates key", "POST", "/v1/keys", e.alice, 403, CodeForbidden},
		{"user revokes key", "DELETE", "/v1/keys/" + revoked.ID, e.alice, 403, CodeForbidden},
		{"user ok", "GET", "/v1/sandboxes", e.alice, 200, ""},
		{"admin hosts", "GET", "/v1/hosts", e.admin, 200, ""},
		{"admin keys", "GET", "/v1/keys", e.admin, 200, ""},
		{"health needs no key", "GET", "/healthz", "", 200, ""},
	}
	for _, tc := range tests {
		r := e.do(tc.method, tc.path, tc.key, nil)
		if r.status != tc.status || r.errCode() != tc.code {
			t.Fatalf("%s: %d %s", tc.name, r.status, r.body)
		}
		if r.status == 401 && strings.Contains(string(r.body), "revoked API key:") {
			t.Fatalf("%s: cause leaked: %s", tc.name, r.body)
		}
	}
}

func TestKeysAdmin(t *testing.T) {
	e := newEnv(t, Config{})
	r := e.do("POST", "/v1/keys", e.admin, CreateKeyRequest{OwnerID: "dave", Name: "ci", Pool: &store.Pool{VCPUs: 1, MemoryMB: 256, StorageMB: 10}})
	if r.status != 201 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	k := decode[CreatedKey](t, r)
	if !auth.ValidFormat(k.Key) || k.OwnerID != "dave" || k.Pool.VCPUs != 1 || strings.Contains(string(r.body), "key_hash") {
		t.Fatalf("created %s", r.body)
	}
	if r := e.do("GET", "/v1/sandboxes", k.Key, nil); r.status != 200 {
		t.Fatalf("new key: %d", r.status)
	}
	list := e.do("GET", "/v1/keys", e.admin, nil)
	if strings.Contains(string(list.body), k.Key) || !strings.Contains(string(list.body), k.ID) {
		t.Fatalf("key list shows the secret or misses the key: %s", list.body)
	}
	for _, bad := range []string{`{}`, `{"owner_id":""}`, `{"owner_id":"x","pool":{"vcpus":-1}}`, `{"owner_id":"x","nope":1}`} {
		if r := e.do("POST", "/v1/keys", e.admin, bad); r.status != 400 || r.errCode() != CodeInvalidRequest {
			t.Fatalf("%s: %d %s", bad, r.status, r.body)
		}
	}
	if r := e.do("DELETE", "/v1/keys/"+k.ID, e.admin, nil); r.status != 200 || !strings.Contains(string(r.body), "revoked_at") {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/v1/sandboxes", k.Key, nil); r.status != 401 {
		t.Fatalf("revoked key: %d", r.status)
	}
	if r := e.do("DELETE", "/v1/keys/key-ffffffff", e.admin, nil); r.status != 404 || r.errCode() != CodeNotFound {
		t.Fatalf("revoke unknown: %d %s", r.status, r.body)
	}
	var hosts struct{ Hosts []map[string]any }
	if err := json.Unmarshal(e.do("GET", "/v1/hosts", e.admin, nil).body, &hosts); err != nil || len(hosts.Hosts) != 1 || hosts.Hosts[0]["id"] != testHost {
		t.Fatalf("hosts %+v %v", hosts, err)
	}
}

// Bob must not see or touch alice's sandbox through any endpoint: every
// one answers 404 not_found, exactly as for a sandbox that does not exist;
// admins get the same on sandbox routes (they own none of them).
func TestOwnerIsolation(t *testing.T) {
	e := newEnv(t, Config{})
	sb := e.create(e.alice, CreateRequest{Metadata: map[string]string{"who": "alice"}})
	if r := e.do("PUT", "/v1/sandboxes/"+sb.ID+"/files?path=/secret", e.alice, "s3cret"); r.status != 200 {
		t.Fatal(r.status)
	}
	base := "/v1/sandboxes/" + sb.ID
	reqs := []struct {
		method, path string
		body         any
	}{
		{"GET", base, nil},
		{"PATCH", base, UpdateRequest{TimeoutSec: Seconds(1), Metadata: map[string]string{"who": "bob"}}},
		{"POST", base + "/exec", ExecRequest{Cmd: "echo"}},
		{"PUT", base + "/files?path=/secret", "overwrite"},
		{"GET", base + "/files/secret", nil},
		{"GET", base + "/terminal", nil},
		{"POST", base + "/pause", nil},
		{"POST", base + "/resume", nil},
		{"POST", base + "/hibernate", nil},
		{"DELETE", base, nil},
	}
	for _, key := range []string{e.bob, e.admin} {
		for _, q := range reqs {
			r := e.do(q.method, q.path, key, q.body)
			if r.status != 404 || r.errCode() != CodeNotFound {
				t.Fatalf("%s %s: %d %s", q.method, q.path, r.status, r.body)
			}
			missing := e.do(q.method, strings.Replace(q.path, sb.ID, "sb-00000000", 1), key, q.body)
			if missing.status != r.status || missing.errCode() != r.errCode() {
				t.Fatalf("%s %s: another owner's (%d) differs from a missing one (%d)", q.method, q.path, r.status, missing.status)
			}
		}
		page := decode[ListResponse](t, e.do("GET", "/v1/sandboxes", key, nil))
		if len(page.Sandboxes) != 0 {
			t.Fatalf("list shows %d foreign sandboxes", len(page.Sandboxes))
		}
	}
	// Untouched.
	r := e.do("GET", base+"/files/secret", e.alice, nil)
	if string(r.body) != "s3cret" {
		t.Fatalf("file changed: %q", r.body)
	}
	if got := decode[SandboxView](t, e.do("GET", base, e.alice, nil)); got.Status != "running" ||
		got.Metadata["who"] != "alice" || got.TimeoutSec != 300 {
		t.Fatalf("sandbox changed by others: %+v", got)
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, Config{})
	slow := e.key(CreateKeyRequest{OwnerID: "erin", RateLimitPerSec: 0.01, RateLimitBurst: 2})
	for i := range 2 {
		if r := e.do("GET", "/v1/sandboxes", slow.Key, nil); r.status != 200 {
			t.Fatalf("request %d: %d", i, r.status)
		}
	}
	r := e.do("GET", "/v1/sandboxes", slow.Key, nil)
	if r.status != http.StatusTooManyRequests || r.errCode() != CodeRateLimited {
		t.Fatalf("%d %s", r.status, r.body)
	}
	secs, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || secs < 1 || secs > 100 {
		t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
	}
	// Other keys are not affected.
	if r := e.do("GET", "/v1/sandboxes", e.alice, nil); r.status != 200 {
		t.Fatalf("other key: %d", r.status)
	}
}

func TestPaging(t *testing.T) {
	e := newEnv(t, Config{})
	want := map[string]bool{}
	for range 5 {
		want[e.create(e.alice, CreateRequest{Template: "paged"}).ID] = true
	}
	seen := map[string]bool{}
	tok := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		p := decode[ListResponse](t, e.do("GET", "/v1/sandboxes?template=paged&limit=2&page_token="+tok, e.alice, nil))
		for _, s := range p.Sandboxes {
			if seen[s.ID] {
				t.Fatalf("%s twice", s.ID)
			}
			seen[s.ID] = true
		}
		if p.NextPageToken == "" {
			break
		}
		tok = p.NextPageToken
	}
	if len(seen) != len(want) {
		t.Fatalf("saw %d of %d", len(seen), len(want))
	}
}

func TestRequestID(t *testing.T) {
	e := newEnv(t, Config{})
	r := e.do("GET", "/healthz", "", nil, "X-Request-ID", "abc-123")
	if r.header.Get("X-Request-ID") != "abc-123" {
		t.Fatalf("echoed %q", r.header.Get("X-Request-ID"))
	}
	r = e.do("GET", "/healthz", "", nil, "X-Request-ID", "bad id!")
	if id := r.header.Get("X-Request-ID"); id == "" || strings.Contains(id, " ") {
		t.Fatalf("generated %q", id)
	}
}

func TestTerminalWithoutAgentSupport(t *testing.T) {
	e := newEnv(t, Config{})
	sb := e.create(e.alice, CreateRequest{})
	tests := []struct {
		path, key string
		status    int
		code      string
	}{
		{"/v1/sandboxes/" + sb.ID + "/terminal", e.alice, 501, CodeInvalidRequest},
		{"/v1/sandboxes/" + sb.ID + "/terminal", e.bob, 404, CodeNotFound},
		{"/v1/sandboxes/" + sb.ID + "/terminal?cols=0", e.alice, 400, CodeInvalidRequest},
		{"/v1/sandboxes/" + sb.ID + "/terminal", "", 401, CodeUnauthorized},
	}
	for _, tc := range tests {
		if r := e.do("GET", tc.path, tc.key, nil); r.status != tc.status || r.errCode() != tc.code {
			t.Fatalf("%s: %d %s", tc.path, r.status, r.body)
		}
	}
}
