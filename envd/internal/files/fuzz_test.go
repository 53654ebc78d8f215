package files

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wrenn-dev/envd/internal/state"
)

// fuzzHandler is a handler confined to a fresh directory (its default
// workdir): whatever the input, nothing outside it is read or written.
func fuzzHandler(f *testing.F) (http.Handler, string) {
	dir := f.TempDir()
	st := state.New()
	if _, err := st.Apply(state.Init{DefaultWorkdir: &dir}, ""); err != nil {
		f.Fatal(err)
	}
	h := New(st, slog.New(slog.DiscardHandler), Options{MaxUploadBytes: 1 << 20, BufferSize: 4096})
	h.confine = dir
	mux := http.NewServeMux()
	h.Register(mux)
	return mux, dir
}

// checkResponse holds for every reply: a known status, never 500, and a
// JSON body of the documented shape.
func checkResponse(t *testing.T, rec *httptest.ResponseRecorder, dir string, input any) {
	t.Helper()
	switch rec.Code {
	case 200, 400, 404, 413:
	default:
		t.Fatalf("status %d for %q: %s", rec.Code, input, rec.Body.Bytes())
	}
	if rec.Code != 200 {
		var eb errorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Code != rec.Code || eb.Message == "" {
			t.Fatalf("error body %q (%v)", rec.Body.Bytes(), err)
		}
		return
	}
	if rec.Header().Get("Content-Type") != "application/json" {
		return // a download
	}
	var entries []uploadEntry
	if err := json.Unmarshal(rec.Body.Bytes(), &entries); err != nil {
		t.Fatalf("upload response %q: %v", rec.Body.Bytes(), err)
	}
	for _, e := range entries {
		if !within(e.Path, dir) || e.Type != "file" || e.Name != filepath.Base(e.Path) {
			t.Fatalf("entry %+v escapes %s or is malformed", e, dir)
		}
		if fi, err := os.Stat(e.Path); err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("reported %s but stat says %v, %v", e.Path, fi, err)
		}
	}
}

func FuzzUploadMultipart(f *testing.F) {
	_, valid := multipartBody(f,
		part{field: "file", filename: "a.txt", data: []byte("hello")},
		part{field: "other", data: []byte("x")},
		part{field: "file", filename: "sub/b.bin", data: []byte{0, 1, 2}})
	f.Add("", valid)
	boundary := string(valid[2:bytes.IndexByte(valid, '\r')])
	f.Add(boundary, valid)
	f.Add("b", []byte("--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../etc/x\"\r\n\r\nx\r\n--b--\r\n"))
	f.Add("b", []byte("--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"~/x\"\r\n\r\nx\r\n--b--\r\n"))
	f.Add("b", []byte("--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\".\"\r\n\r\nx\r\n--b--\r\n"))
	f.Add("b", []byte("--b\r\nContent-Disposition: form-data; name=\"file\"; filename*=utf-8''caf%C3%A9\r\n\r\nx\r\n--b--\r\n"))
	f.Add("b", []byte("--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nx\r\n--b--\r\n"))
	f.Add("b", []byte("--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=ZZ=\r\n--b--\r\n"))
	f.Add("b", []byte("--b\r\n\r\n--b--"))
	f.Add("\"", []byte{})
	mux, dir := fuzzHandler(f)

	f.Fuzz(func(t *testing.T, boundary string, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/files", bytes.NewReader(body))
		ct := "multipart/form-data"
		if boundary != "" {
			ct += "; boundary=" + boundary
		} else if i := bytes.IndexByte(body, '\r'); len(body) > 2 && i > 2 {
			ct += "; boundary=\"" + strings.ReplaceAll(string(body[2:i]), `"`, ``) + "\""
		}
		req.Header.Set("Content-Type", ct)
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		checkResponse(t, rec, dir, body)
	})
}

func FuzzPath(f *testing.F) {
	for _, s := range []string{"a.txt", "sub/dir/x", "~", "~/x", "/etc/passwd", "..", "../..",
		".", "a/../../b", "a\x00b", "", " ", "//", "a//b/", strings.Repeat("x", 300), "a/" + strings.Repeat("y/", 200)} {
		f.Add(s)
	}
	mux, dir := fuzzHandler(f)
	f.Fuzz(func(t *testing.T, p string) {
		// Write then read back through the handler.
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/files?path="+url.QueryEscape(p), strings.NewReader("data"))
		req.Header.Set("Content-Type", "application/octet-stream")
		mux.ServeHTTP(rec, req)
		checkResponse(t, rec, dir, p)
		wrote := rec.Code == 200

		rec = httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/files?path="+url.QueryEscape(p), nil))
		checkResponse(t, rec, dir, p)
		if wrote && (rec.Code != 200 || rec.Body.String() != "data") {
			t.Fatalf("wrote %q but read back %d %q", p, rec.Code, rec.Body.Bytes())
		}
	})
}

func FuzzNegotiateEncoding(f *testing.F) {
	for _, s := range []string{"", "gzip", "gzip;q=0.5, identity;q=0", "*;q=0", "br;q=1.0, *;q=0.1", ";;;,,=q"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := negotiateEncoding(s)
		if err == nil && got != "gzip" && got != "identity" {
			t.Fatalf("%q -> %q", s, got)
		}
	})
}
