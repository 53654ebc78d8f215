package files

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func (e *env) postCompose(v any, hdr ...string) (*http.Response, []byte) {
	e.t.Helper()
	var body []byte
	switch x := v.(type) {
	case string:
		body = []byte(x)
	default:
		body, _ = json.Marshal(v)
	}
	req, _ := http.NewRequest(http.MethodPost, e.url("/files/compose"), bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return e.do(req)
}

func TestCompose(t *testing.T) {
	e := newEnv(t, Options{})
	var srcs []string
	var want []byte
	for i, chunk := range []string{"alpha-", "beta-", strings.Repeat("gamma", 50000)} {
		p := writeTestFile(t, e.dir, filepath.Join("chunks", string(rune('a'+i))), []byte(chunk))
		srcs = append(srcs, p)
		want = append(want, chunk...)
	}
	// One source relative to the workdir.
	srcs[1] = "chunks/b"

	resp, body := e.postCompose(map[string]any{"source_paths": srcs, "destination": "out/assembled.bin"})
	wantStatus(t, resp, body, http.StatusOK)
	dest := filepath.Join(e.dir, "out/assembled.bin")
	var got uploadEntry
	if err := json.Unmarshal(body, &got); err != nil || !sameEntry(got, uploadEntry{Path: dest, Name: "assembled.bin", Type: "file"}) {
		t.Fatalf("response %s (%v)", body, err)
	}
	if !bytes.Equal(readFile(t, dest), want) {
		t.Fatal("composed content differs")
	}
	for _, s := range []string{"a", "b", "c"} {
		if _, err := os.Stat(filepath.Join(e.dir, "chunks", s)); err == nil {
			t.Errorf("source %s not removed", s)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(e.dir, "out")); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}

	t.Run("replaces existing destination", func(t *testing.T) {
		s := writeTestFile(t, e.dir, "s1", []byte("new"))
		resp, body := e.postCompose(map[string]any{"source_paths": []string{s}, "destination": dest})
		wantStatus(t, resp, body, http.StatusOK)
		if string(readFile(t, dest)) != "new" {
			t.Fatal("destination not replaced")
		}
	})
	t.Run("owned by the user", func(t *testing.T) {
		requireRoot(t)
		s := writeTestFile(t, e.dir, "s2", []byte("x"))
		resp, body := e.postCompose(map[string]any{"source_paths": []string{s}, "destination": "nb/out", "username": "nobody"})
		wantStatus(t, resp, body, http.StatusOK)
		for _, p := range []string{filepath.Join(e.dir, "nb"), filepath.Join(e.dir, "nb/out")} {
			if uid, _ := owner(t, p); uid != 65534 {
				t.Errorf("%s owned by %d", p, uid)
			}
		}
	})
}

func TestComposeErrors(t *testing.T) {
	e := newEnv(t, Options{})
	keep := writeTestFile(t, e.dir, "keep", []byte("k"))
	cases := []struct {
		name   string
		req    any
		status int
	}{
		{"empty sources", map[string]any{"source_paths": []string{}, "destination": "d"}, 400},
		{"no destination", map[string]any{"source_paths": []string{keep}}, 400},
		{"missing source", map[string]any{"source_paths": []string{keep, "nope"}, "destination": "d"}, 404},
		{"source is a directory", map[string]any{"source_paths": []string{e.dir}, "destination": "d"}, 400},
		{"source is destination", map[string]any{"source_paths": []string{keep}, "destination": keep}, 400},
		{"destination is a directory", map[string]any{"source_paths": []string{keep}, "destination": e.dir}, 400},
		{"unknown user", map[string]any{"source_paths": []string{keep}, "destination": "d", "username": "no-such-user-wrenn"}, 401},
		{"bad JSON", "{", 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.postCompose(c.req)
			wantStatus(t, resp, body, c.status)
		})
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatal("a failed compose removed a source")
	}
	if _, err := os.Stat(filepath.Join(e.dir, "d")); err == nil {
		t.Fatal("a failed compose wrote the destination")
	}
}
