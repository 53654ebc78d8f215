package files

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestDownload(t *testing.T) {
	e := newEnv(t, Options{})
	data := bytes.Repeat([]byte("0123456789"), 1000)
	p := writeTestFile(t, e.dir, "sub/data.txt", data)

	t.Run("absolute", func(t *testing.T) {
		resp, body := e.get(e.url("/files", "path", p))
		wantStatus(t, resp, body, http.StatusOK)
		if !bytes.Equal(body, data) {
			t.Fatalf("got %d bytes, want %d", len(body), len(data))
		}
		if got := resp.Header.Get("Content-Length"); got != "10000" {
			t.Errorf("Content-Length %q", got)
		}
		if got := resp.Header.Get("Content-Type"); !strings.HasPrefix(got, "text/plain") {
			t.Errorf("Content-Type %q", got)
		}
		if got := resp.Header.Get("Content-Disposition"); got != `attachment; filename=data.txt` {
			t.Errorf("Content-Disposition %q", got)
		}
		if resp.Header.Get("ETag") == "" || resp.Header.Get("Last-Modified") == "" {
			t.Errorf("no validators: %v", resp.Header)
		}
	})
	t.Run("relative to workdir", func(t *testing.T) {
		resp, body := e.get(e.url("/files", "path", "sub/data.txt"))
		wantStatus(t, resp, body, http.StatusOK)
		if !bytes.Equal(body, data) {
			t.Fatal("content differs")
		}
	})
	t.Run("unknown extension is octet-stream", func(t *testing.T) {
		q := writeTestFile(t, e.dir, "blob.wrenn-unknown", []byte{1, 2, 3})
		resp, body := e.get(e.url("/files", "path", q))
		wantStatus(t, resp, body, http.StatusOK)
		if got := resp.Header.Get("Content-Type"); got != "application/octet-stream" {
			t.Errorf("Content-Type %q", got)
		}
	})
	t.Run("empty file", func(t *testing.T) {
		q := writeTestFile(t, e.dir, "empty", nil)
		resp, body := e.get(e.url("/files", "path", q))
		wantStatus(t, resp, body, http.StatusOK)
		if len(body) != 0 || resp.Header.Get("Content-Length") != "0" {
			t.Fatalf("body %q, Content-Length %q", body, resp.Header.Get("Content-Length"))
		}
	})
	t.Run("procfs file with zero size", func(t *testing.T) {
		resp, body := e.get(e.url("/files", "path", "/proc/version"))
		wantStatus(t, resp, body, http.StatusOK)
		if !bytes.HasPrefix(body, []byte("Linux")) {
			t.Fatalf("got %q", body)
		}
	})
	t.Run("HEAD", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodHead, e.url("/files", "path", p), nil)
		resp, body := e.do(req)
		if resp.StatusCode != http.StatusOK || len(body) != 0 || resp.ContentLength != 10000 {
			t.Fatalf("HEAD: %d, %d body bytes, length %d", resp.StatusCode, len(body), resp.ContentLength)
		}
	})
}

func TestDownloadRangeAndConditional(t *testing.T) {
	e := newEnv(t, Options{})
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(i * 7)
	}
	p := writeTestFile(t, e.dir, "r.bin", data)
	u := e.url("/files", "path", p)

	cases := []struct {
		name       string
		hdr        []string
		wantStatus int
		wantBody   []byte
	}{
		{"single range", []string{"Range", "bytes=10-19"}, 206, data[10:20]},
		{"suffix range", []string{"Range", "bytes=-5"}, 206, data[4091:]},
		{"open range", []string{"Range", "bytes=4000-"}, 206, data[4000:]},
		{"range wins over gzip", []string{"Range", "bytes=0-3", "Accept-Encoding", "gzip"}, 206, data[:4]},
		{"unsatisfiable", []string{"Range", "bytes=5000-6000"}, 416, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.get(u, c.hdr...)
			if resp.StatusCode != c.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, c.wantStatus)
			}
			if c.wantBody != nil && !bytes.Equal(body, c.wantBody) {
				t.Fatalf("body % x, want % x", body, c.wantBody)
			}
			if resp.Header.Get("Content-Encoding") != "" {
				t.Fatalf("range response encoded %q", resp.Header.Get("Content-Encoding"))
			}
		})
	}

	resp, _ := e.get(u)
	tag, lm := resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	t.Run("If-None-Match", func(t *testing.T) {
		resp, body := e.get(u, "If-None-Match", tag, "Accept-Encoding", "gzip")
		if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
			t.Fatalf("status %d, %d bytes", resp.StatusCode, len(body))
		}
	})
	t.Run("If-Modified-Since", func(t *testing.T) {
		resp, _ := e.get(u, "If-Modified-Since", lm)
		if resp.StatusCode != http.StatusNotModified {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	t.Run("If-Range stale", func(t *testing.T) {
		resp, body := e.get(u, "Range", "bytes=0-9", "If-Range", `"stale"`)
		if resp.StatusCode != http.StatusOK || len(body) != len(data) {
			t.Fatalf("status %d, %d bytes", resp.StatusCode, len(body))
		}
	})
	t.Run("modified file changes ETag", func(t *testing.T) {
		future := time.Now().Add(time.Hour)
		if err := os.Chtimes(p, future, future); err != nil {
			t.Fatal(err)
		}
		resp, _ := e.get(u, "If-None-Match", tag)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d after change", resp.StatusCode)
		}
	})
}

func TestDownloadGzip(t *testing.T) {
	e := newEnv(t, Options{})
	data := bytes.Repeat([]byte("compress me please "), 5000)
	p := writeTestFile(t, e.dir, "z.txt", data)
	for _, ae := range []string{"gzip", "br;q=1, gzip;q=0.5", "*;q=0.1, identity;q=0"} {
		t.Run(ae, func(t *testing.T) {
			resp, body := e.get(e.url("/files", "path", p), "Accept-Encoding", ae)
			wantStatus(t, resp, body, http.StatusOK)
			if resp.Header.Get("Content-Encoding") != "gzip" {
				t.Fatalf("headers %v", resp.Header)
			}
			if len(body) >= len(data)/4 {
				t.Errorf("gzip body is %d bytes for %d of text", len(body), len(data))
			}
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(zr)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("gunzip: %v, %d bytes", err, len(got))
			}
			if resp.Header.Get("Vary") != "Accept-Encoding" {
				t.Errorf("Vary %q", resp.Header.Get("Vary"))
			}
		})
	}
	t.Run("HEAD gzip", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodHead, e.url("/files", "path", p), nil)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, body := e.do(req)
		if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("status %d, %d bytes, %v", resp.StatusCode, len(body), resp.Header)
		}
	})
	t.Run("identity preferred", func(t *testing.T) {
		resp, body := e.get(e.url("/files", "path", p), "Accept-Encoding", "identity, gzip;q=0.5")
		wantStatus(t, resp, body, http.StatusOK)
		if resp.Header.Get("Content-Encoding") != "" || !bytes.Equal(body, data) {
			t.Fatalf("got encoding %q", resp.Header.Get("Content-Encoding"))
		}
	})
}

func TestDownloadErrors(t *testing.T) {
	e := newEnv(t, Options{})
	f := writeTestFile(t, e.dir, "file", []byte("x"))
	fifo := filepath.Join(e.dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		query  []string
		hdr    []string
		status int
	}{
		{"missing", []string{"path", filepath.Join(e.dir, "nope")}, nil, 404},
		{"under a file", []string{"path", filepath.Join(f, "x")}, nil, 404},
		{"directory", []string{"path", e.dir}, nil, 400},
		{"no path", nil, nil, 400},
		{"NUL in path", []string{"path", "a\x00b"}, nil, 400},
		{"fifo does not block", []string{"path", fifo}, nil, 400},
		{"unknown user", []string{"path", f, "username", "no-such-user-wrenn"}, nil, 401},
		{"bad basic auth", []string{"path", f}, []string{"Authorization", "Basic !!"}, 401},
		{"no acceptable encoding", []string{"path", f}, []string{"Accept-Encoding", "br, identity;q=0"}, 406},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.get(e.url("/files", c.query...), c.hdr...)
			wantStatus(t, resp, body, c.status)
		})
	}
}

func TestNegotiateEncoding(t *testing.T) {
	cases := []struct {
		in, want string
		bad      bool
	}{
		{in: "", want: "identity"},
		{in: "gzip", want: "gzip"},
		{in: "GZIP", want: "gzip"},
		{in: "x-gzip", want: "gzip"},
		{in: "deflate, gzip;q=0.8", want: "gzip"},
		{in: "identity;q=1, gzip;q=0.5", want: "identity"},
		{in: "gzip;q=0", want: "identity"},
		{in: "br", want: "identity"},
		{in: "*", want: "identity"},
		{in: "identity;q=0, *", want: "gzip"},
		{in: "*;q=0", bad: true},
		{in: "*;q=0, gzip", want: "gzip"},
		{in: "br, identity;q=0", bad: true},
		{in: "gzip;q=0, identity;q=0, *", bad: true},
		{in: "gzip;q=nonsense", want: "gzip"},
	}
	for _, c := range cases {
		got, err := negotiateEncoding(c.in)
		if c.bad {
			if err == nil {
				t.Errorf("%q: got %q, want error", c.in, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: got %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}
