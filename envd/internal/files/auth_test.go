package files

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestSignMatchesSDK pins the formula of the SDKs' getSignature: btoa of the
// SHA-256 digest with the '=' padding stripped.
func TestSignMatchesSDK(t *testing.T) {
	sum := sha256.Sum256([]byte("/home/user/a.txt:read:user:tok:1700000000"))
	want := "v1_" + base64.StdEncoding.EncodeToString(sum[:])
	for want[len(want)-1] == '=' {
		want = want[:len(want)-1]
	}
	exp := int64(1700000000)
	if got := Sign("/home/user/a.txt", "read", "user", "tok", &exp); got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
	sum = sha256.Sum256([]byte("a.txt:write::tok"))
	if got := Sign("a.txt", "write", "", "tok", nil); got != "v1_"+base64.RawStdEncoding.EncodeToString(sum[:]) {
		t.Fatalf("no-expiry signature %s", got)
	}
}

func TestSignedURLs(t *testing.T) {
	e := newEnv(t, Options{})
	const tok = "s3cret-token"
	e.setToken(tok)
	p := writeTestFile(t, e.dir, "signed.txt", []byte("signed content"))
	future := time.Now().Add(time.Hour).Unix()
	past := time.Now().Add(-time.Minute).Unix()
	ptr := func(v int64) *int64 { return &v }
	sig := func(path, op, user string, exp *int64) []string {
		q := []string{"path", path, "signature", Sign(path, op, user, tok, exp)}
		if user != "" {
			q = append(q, "username", user)
		}
		if exp != nil {
			q = append(q, "signature_expiration", strconv.FormatInt(*exp, 10))
		}
		return q
	}
	with := func(q []string, kv ...string) []string { return append(append([]string{}, q...), kv...) }

	getCases := []struct {
		name   string
		query  []string
		hdr    []string
		status int
		valid  bool // what SignatureValid should say
	}{
		{"no token, no signature", []string{"path", p}, nil, 401, false},
		{"token header", []string{"path", p}, []string{"X-Access-Token", tok}, 200, false},
		{"wrong token header", []string{"path", p}, []string{"X-Access-Token", "nope"}, 401, false},
		{"wrong token header beats valid signature", sig(p, "read", "", nil), []string{"X-Access-Token", "nope"}, 401, true},
		{"signature", sig(p, "read", "", nil), nil, 200, true},
		{"signature with user", sig(p, "read", "root", nil), nil, 200, true},
		{"signature with future expiry", sig(p, "read", "", ptr(future)), nil, 200, true},
		{"expired signature", sig(p, "read", "", ptr(past)), nil, 401, false},
		{"write signature used to read", sig(p, "write", "", nil), nil, 401, false},
		{"signature for another path", with(sig("/etc/passwd", "read", "", nil)[2:], "path", p), nil, 401, false},
		{"signature for another user", with(sig(p, "read", "", nil), "username", "root"), nil, 401, false},
		{"expiry stripped", sig(p, "read", "", ptr(future))[:4], nil, 401, false},
		{"garbage expiry", with(sig(p, "read", "", nil), "signature_expiration", "soon"), nil, 401, false},
		{"tampered signature", []string{"path", p, "signature", Sign(p, "read", "", "other", nil)}, nil, 401, false},
	}
	for _, c := range getCases {
		t.Run("GET "+c.name, func(t *testing.T) {
			u := e.url("/files", c.query...)
			resp, body := e.get(u, c.hdr...)
			wantStatus(t, resp, body, c.status)
			if c.status == 200 && string(body) != "signed content" {
				t.Fatalf("body %q", body)
			}
			req, _ := http.NewRequest(http.MethodGet, u, nil)
			for i := 0; i+1 < len(c.hdr); i += 2 {
				req.Header.Set(c.hdr[i], c.hdr[i+1])
			}
			if got := e.h.SignatureValid(req); got != c.valid {
				t.Errorf("SignatureValid = %v, want %v", got, c.valid)
			}
		})
	}

	up := filepath.Join(e.dir, "up.txt")
	postCases := []struct {
		name   string
		query  []string
		status int
	}{
		{"write signature", sig(up, "write", "", nil), 200},
		{"read signature used to write", sig(up, "read", "", nil), 401},
		{"expired write signature", sig(up, "write", "", ptr(past)), 401},
	}
	for _, c := range postCases {
		t.Run("POST "+c.name, func(t *testing.T) {
			resp, body := e.postOctet(e.url("/files", c.query...), []byte("up"))
			wantStatus(t, resp, body, c.status)
		})
	}

	t.Run("signed multipart without path", func(t *testing.T) {
		// uploadUrl() with no path signs the empty path; the parts name
		// their targets.
		q := []string{"signature", Sign("", "write", "", tok, nil)}
		resp, body := e.postMultipart(e.url("/files", q...), []part{{field: "file", filename: "mp-signed.txt", data: []byte("m")}})
		wantStatus(t, resp, body, http.StatusOK)
	})

	t.Run("SignatureValid scope", func(t *testing.T) {
		q := sig(p, "read", "", nil)
		for _, c := range []struct {
			method, path string
		}{
			{http.MethodPut, "/files"},
			{http.MethodGet, "/files/compose"},
			{http.MethodGet, "/envs"},
		} {
			u, _ := url.Parse(e.url("/files", q...))
			u.Path = c.path
			req, _ := http.NewRequest(c.method, u.String(), nil)
			if e.h.SignatureValid(req) {
				t.Errorf("%s %s accepted", c.method, c.path)
			}
		}
		req, _ := http.NewRequest(http.MethodHead, e.url("/files", q...), nil)
		if !e.h.SignatureValid(req) {
			t.Error("HEAD with a read signature refused")
		}
	})

	t.Run("compose needs the token", func(t *testing.T) {
		s := writeTestFile(t, e.dir, "c1", []byte("c"))
		req := map[string]any{"source_paths": []string{s}, "destination": "c-out"}
		resp, body := e.postCompose(req)
		wantStatus(t, resp, body, http.StatusUnauthorized)
		resp, body = e.postCompose(req, "X-Access-Token", tok)
		wantStatus(t, resp, body, http.StatusOK)
	})
}

// A signed URL acts as the user it was signed for: an Authorization
// header cannot switch it to someone else.
func TestSignedURLIgnoresBasicAuth(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, Options{})
	const tok = "tok"
	e.setToken(tok)
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("nobody:"))
	target := filepath.Join(e.dir, "who.txt")
	u := e.url("/files", "path", target, "signature", Sign(target, "write", "", tok, nil))
	resp, body := e.postOctet(u, []byte("x"), "Authorization", basic)
	wantStatus(t, resp, body, http.StatusOK)
	if uid, _ := owner(t, target); uid != 0 {
		t.Fatalf("signed upload for the default user (root) owned by %d", uid)
	}
	// With the token, Basic auth applies as usual.
	resp, body = e.postOctet(e.url("/files", "path", target), []byte("y"), "Authorization", basic, "X-Access-Token", tok)
	wantStatus(t, resp, body, http.StatusOK)
	if uid, _ := owner(t, target); uid != 65534 {
		t.Fatalf("token upload as nobody owned by %d", uid)
	}
}

func TestNoTokenNoChecks(t *testing.T) {
	e := newEnv(t, Options{})
	p := writeTestFile(t, e.dir, "open.txt", []byte("o"))
	resp, body := e.get(e.url("/files", "path", p, "signature", "v1_garbage"))
	wantStatus(t, resp, body, http.StatusOK)
	req, _ := http.NewRequest(http.MethodGet, e.url("/files", "path", p, "signature", Sign(p, "read", "", "", nil)), nil)
	if e.h.SignatureValid(req) {
		t.Fatal("SignatureValid true with no token in force")
	}
	// A nil Token func means no token, even if state has one.
	h := New(e.st, nil, Options{})
	e.setToken("t")
	if _, ok := h.token(); ok {
		t.Fatal("nil Token func reported a token")
	}
}
