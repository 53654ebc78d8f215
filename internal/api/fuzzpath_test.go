package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// FuzzPaths sends arbitrary paths under /v1/ with every method, as an
// authenticated user. Whatever the path, the answer is never a 5xx and every
// refusal is the documented error object.
func FuzzPaths(f *testing.F) {
	for _, s := range []string{"sandboxes", "sandboxes/sb-00000000", "sandboxes/sb-00000000/exec",
		"sandboxes/../keys", "sandboxes/%00", "sandboxes/sb-00000000/files/../../etc/passwd",
		"sandboxes//files", "keys/x", "hosts", "sandboxes/sb-zzzzzzzz/pause", "\x00", "sandboxes/" + string(make([]byte, 300))} {
		for m := range 5 {
			f.Add(uint8(m), s)
		}
	}
	e := newEnv(f, Config{MaxJSONBytes: 64 << 10})
	known := map[string]bool{CodeInvalidRequest: true, CodeUnauthorized: true, CodeForbidden: true, CodeNotFound: true,
		CodeConflict: true, CodePoolExhausted: true, CodeRateLimited: true, CodePayloadTooLarge: true}
	methods := []string{"GET", "POST", "PUT", "DELETE", "PATCH"}
	f.Fuzz(func(t *testing.T, m uint8, path string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		u, _ := url.Parse(e.srv.URL)
		u.Path = "/v1/" + path
		req, err := http.NewRequestWithContext(ctx, methods[int(m)%len(methods)], e.srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL = u
		req.Header.Set("X-API-Key", e.alice)
		res, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatalf("%s %q: %v", req.Method, path, err)
		}
		defer res.Body.Close()
		if res.StatusCode >= 500 {
			t.Fatalf("%s %q: %d", req.Method, path, res.StatusCode)
		}
		if res.StatusCode < 400 {
			return
		}
		var eb ErrorBody
		if err := json.NewDecoder(res.Body).Decode(&eb); err != nil || !known[eb.Error.Code] || eb.Error.Message == "" {
			t.Fatalf("%s %q: %d with %+v (%v)", req.Method, path, res.StatusCode, eb, err)
		}
	})
}
