package api

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// FuzzCreate posts arbitrary bodies to POST /v1/sandboxes: the handler
// must never panic or answer 5xx, and every answer is a sandbox (201) or
// an error in the documented shape with a documented code.
func FuzzCreate(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"template":"minimal","vcpus":1,"memory_mb":256}`,
		`{"metadata":{"a":"b"},"envs":{"A":"1"}}`, `{"vcpus":1e400}`, `{"template":"\u0000"}`,
		`{"timeout_sec":86401}`, `null`, `"str"`, `{"metadata":{"":"x"}}`, `{"envs":{"A":"\u0000"}}`,
		`{"template":"missing"}`, `{"vcpus":2147483648}`} {
		f.Add([]byte(s))
	}
	e := newEnv(f, Config{MaxJSONBytes: 64 << 10})
	allowed := map[int]string{400: CodeInvalidRequest, 404: CodeNotFound, 413: CodePayloadTooLarge, 429: CodePoolExhausted}
	f.Fuzz(func(t *testing.T, body []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, "POST", e.srv.URL+"/v1/sandboxes", bytesReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-API-Key", e.alice)
		res, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatalf("body %q: %v", body, err)
		}
		defer res.Body.Close()
		if res.StatusCode == 201 {
			var v SandboxView
			if err := json.NewDecoder(res.Body).Decode(&v); err != nil || v.Status != "running" {
				t.Fatalf("201 with %+v %v", v, err)
			}
			// Free the pool again so later inputs can create too.
			del, _ := http.NewRequest("DELETE", e.srv.URL+"/v1/sandboxes/"+v.ID, nil)
			del.Header.Set("X-API-Key", e.alice)
			dr, err := e.srv.Client().Do(del)
			if err != nil {
				t.Fatal(err)
			}
			dr.Body.Close()
			if dr.StatusCode != 204 {
				t.Fatalf("delete: %d", dr.StatusCode)
			}
			return
		}
		var eb ErrorBody
		if err := json.NewDecoder(res.Body).Decode(&eb); err != nil {
			t.Fatalf("%d: body is not an error object: %v", res.StatusCode, err)
		}
		if want, ok := allowed[res.StatusCode]; !ok || eb.Error.Code != want || eb.Error.Message == "" {
			t.Fatalf("body %q: %d %+v", body, res.StatusCode, eb)
		}
	})
}
