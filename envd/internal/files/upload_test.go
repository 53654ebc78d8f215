package files

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

type part struct {
	field, filename string
	data            []byte
}

// multipartBody builds a form; a part with an empty filename has none.
func multipartBody(t testing.TB, parts ...part) (string, []byte) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		cd := fmt.Sprintf(`form-data; name=%q`, p.field)
		if p.filename != "" {
			cd += fmt.Sprintf(`; filename=%q`, p.filename)
		}
		h.Set("Content-Disposition", cd)
		h.Set("Content-Type", "application/octet-stream")
		w, err := mw.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(p.data)
	}
	mw.Close()
	return mw.FormDataContentType(), buf.Bytes()
}

func (e *env) postMultipart(u string, parts []part, hdr ...string) (*http.Response, []byte) {
	e.t.Helper()
	ct, body := multipartBody(e.t, parts...)
	req, _ := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	req.Header.Set("Content-Type", ct)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return e.do(req)
}

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

func TestUploadOctetRoundTrip(t *testing.T) {
	e := newEnv(t, Options{})
	data := []byte("hello, sandbox\n")
	resp, body := e.postOctet(e.url("/files", "path", "deep/er/hello.txt"), data)
	wantStatus(t, resp, body, http.StatusOK)
	want := filepath.Join(e.dir, "deep/er/hello.txt")
	got := decodeEntries(t, body)
	if len(got) != 1 || !sameEntry(got[0], uploadEntry{Path: want, Name: "hello.txt", Type: "file"}) {
		t.Fatalf("response %+v", got)
	}
	if !strings.Contains(string(body), `"type":"file"`) || strings.Contains(string(body), "metadata") {
		t.Errorf("raw response %s", body)
	}
	fi, err := os.Stat(want)
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("stat: %v %v", fi, err)
	}
	resp, body = e.get(e.url("/files", "path", "deep/er/hello.txt"))
	wantStatus(t, resp, body, http.StatusOK)
	if !bytes.Equal(body, data) {
		t.Fatalf("downloaded %q", body)
	}

	// Overwrite with shorter content: truncated in place, same inode.
	ino := inode(t, want)
	resp, body = e.postOctet(e.url("/files", "path", want), []byte("hi"))
	wantStatus(t, resp, body, http.StatusOK)
	if got := readFile(t, want); string(got) != "hi" || inode(t, want) != ino {
		t.Fatalf("after overwrite: %q, inode changed %v", got, inode(t, want) != ino)
	}
}

func inode(t testing.TB, p string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestUploadMultipart(t *testing.T) {
	e := newEnv(t, Options{})
	abs := filepath.Join(e.dir, "abs", "one.bin")
	parts := []part{
		{field: "file", filename: abs, data: []byte("one")},
		{field: "other", data: []byte("ignored field")},
		{field: "file", filename: "rel/dir/two.txt", data: []byte("two")},
		{field: "file", filename: "three", data: bytes.Repeat([]byte{0, 1, 2}, 100000)},
	}
	resp, body := e.postMultipart(e.url("/files"), parts)
	wantStatus(t, resp, body, http.StatusOK)
	got := decodeEntries(t, body)
	wantPaths := []string{abs, filepath.Join(e.dir, "rel/dir/two.txt"), filepath.Join(e.dir, "three")}
	if len(got) != len(wantPaths) {
		t.Fatalf("response %+v", got)
	}
	for i, p := range wantPaths {
		if got[i].Path != p || got[i].Name != filepath.Base(p) || got[i].Type != "file" {
			t.Errorf("entry %d = %+v, want path %s", i, got[i], p)
		}
	}
	if string(readFile(t, abs)) != "one" || string(readFile(t, wantPaths[1])) != "two" ||
		!bytes.Equal(readFile(t, wantPaths[2]), parts[3].data) {
		t.Fatal("contents differ")
	}

	t.Run("path parameter names the single part", func(t *testing.T) {
		resp, body := e.postMultipart(e.url("/files", "path", "by-param.txt"),
			[]part{{field: "file", filename: "ignored-name", data: []byte("p")}})
		wantStatus(t, resp, body, http.StatusOK)
		if string(readFile(t, filepath.Join(e.dir, "by-param.txt"))) != "p" {
			t.Fatal("not written to the path parameter")
		}
		if _, err := os.Stat(filepath.Join(e.dir, "ignored-name")); err == nil {
			t.Fatal("filename used despite path parameter")
		}
	})
	t.Run("no file parts", func(t *testing.T) {
		resp, body := e.postMultipart(e.url("/files"), []part{{field: "x", data: []byte("y")}})
		wantStatus(t, resp, body, http.StatusOK)
		if strings.TrimSpace(string(body)) != "[]" {
			t.Fatalf("body %s", body)
		}
	})
	t.Run("quoted-printable part", func(t *testing.T) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", `form-data; name="file"; filename="qp.txt"`)
		h.Set("Content-Transfer-Encoding", "quoted-printable")
		w, _ := mw.CreatePart(h)
		w.Write([]byte("caf=C3=A9"))
		mw.Close()
		req, _ := http.NewRequest(http.MethodPost, e.url("/files"), &buf)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		resp, body := e.do(req)
		wantStatus(t, resp, body, http.StatusOK)
		if got := string(readFile(t, filepath.Join(e.dir, "qp.txt"))); got != "café" {
			t.Fatalf("got %q", got)
		}
	})
}

func TestUploadGzipBody(t *testing.T) {
	e := newEnv(t, Options{})
	data := bytes.Repeat([]byte("gzipped upload "), 10000)
	t.Run("octet", func(t *testing.T) {
		resp, body := e.postOctet(e.url("/files", "path", "g1.txt"), gz(t, data), "Content-Encoding", "gzip")
		wantStatus(t, resp, body, http.StatusOK)
		if !bytes.Equal(readFile(t, filepath.Join(e.dir, "g1.txt")), data) {
			t.Fatal("content differs")
		}
	})
	t.Run("multipart", func(t *testing.T) {
		ct, raw := multipartBody(t, part{field: "file", filename: "g2.txt", data: data})
		req, _ := http.NewRequest(http.MethodPost, e.url("/files"), bytes.NewReader(gz(t, raw)))
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Content-Encoding", "GZIP")
		resp, body := e.do(req)
		wantStatus(t, resp, body, http.StatusOK)
		if !bytes.Equal(readFile(t, filepath.Join(e.dir, "g2.txt")), data) {
			t.Fatal("content differs")
		}
	})
	t.Run("corrupt gzip", func(t *testing.T) {
		resp, body := e.postOctet(e.url("/files", "path", "g3.txt"), []byte("not gzip at all"), "Content-Encoding", "gzip")
		wantStatus(t, resp, body, http.StatusBadRequest)
	})
	t.Run("truncated gzip", func(t *testing.T) {
		z := gz(t, data)
		resp, body := e.postOctet(e.url("/files", "path", "g4.txt"), z[:len(z)/2], "Content-Encoding", "gzip")
		wantStatus(t, resp, body, http.StatusBadRequest)
		if _, err := os.Stat(filepath.Join(e.dir, "g4.txt")); err == nil {
			t.Fatal("partial new file left behind")
		}
	})
}

func TestUploadMetadata(t *testing.T) {
	e := newEnv(t, Options{})
	p := filepath.Join(e.dir, "meta.txt")
	resp, body := e.postOctet(e.url("/files", "path", p), []byte("m"),
		"X-Metadata-Author", "mish", "x-metadata-PURPOSE", "upload test")
	wantStatus(t, resp, body, http.StatusOK)
	got := decodeEntries(t, body)
	want := map[string]string{"author": "mish", "purpose": "upload test"}
	if len(got) != 1 || fmt.Sprint(got[0].Metadata) != fmt.Sprint(want) {
		t.Fatalf("response %+v", got)
	}
	buf := make([]byte, 64)
	n, err := unix.Getxattr(p, "user.e2b.author", buf)
	if err != nil || string(buf[:n]) != "mish" {
		t.Fatalf("xattr: %q %v", buf[:n], err)
	}

	// Multipart uploads apply the headers to every file.
	resp, body = e.postMultipart(e.url("/files"), []part{
		{field: "file", filename: "m1", data: []byte("1")},
		{field: "file", filename: "m2", data: []byte("2")},
	}, "X-Metadata-Tag", "both")
	wantStatus(t, resp, body, http.StatusOK)
	for _, en := range decodeEntries(t, body) {
		if en.Metadata["tag"] != "both" {
			t.Errorf("%s: metadata %v", en.Path, en.Metadata)
		}
	}

	// Overwriting replaces the set; no headers clears it.
	resp, body = e.postOctet(e.url("/files", "path", p), []byte("m2"), "X-Metadata-New", "v")
	wantStatus(t, resp, body, http.StatusOK)
	if md := decodeEntries(t, body)[0].Metadata; fmt.Sprint(md) != "map[new:v]" {
		t.Fatalf("after replace: %v", md)
	}
	resp, body = e.postOctet(e.url("/files", "path", p), []byte("m3"))
	wantStatus(t, resp, body, http.StatusOK)
	if md := decodeEntries(t, body)[0].Metadata; md != nil {
		t.Fatalf("after clear: %v", md)
	}
	if _, err := unix.Getxattr(p, "user.e2b.new", buf); err == nil {
		t.Fatal("stale xattr kept")
	}

	t.Run("invalid", func(t *testing.T) {
		for _, hdr := range [][]string{
			{"X-Metadata-K", "caf\xc3\xa9"},
			{"X-Metadata-" + strings.Repeat("k", 300), "v"},
			{"X-Metadata-Big", strings.Repeat("v", 5000)},
		} {
			resp, body := e.postOctet(e.url("/files", "path", "never.txt"), []byte("x"), hdr...)
			wantStatus(t, resp, body, http.StatusBadRequest)
		}
		if _, err := os.Stat(filepath.Join(e.dir, "never.txt")); err == nil {
			t.Fatal("file written despite invalid metadata")
		}
	})
}

func TestUploadOwnership(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, Options{})
	const nobody = 65534
	target := filepath.Join(e.dir, "a", "b", "c.txt")
	resp, body := e.postOctet(e.url("/files", "path", target, "username", "nobody"), []byte("owned"))
	wantStatus(t, resp, body, http.StatusOK)
	for _, p := range []string{filepath.Join(e.dir, "a"), filepath.Join(e.dir, "a", "b"), target} {
		if uid, gid := owner(t, p); uid != nobody || gid != nobody {
			t.Errorf("%s owned by %d:%d, want nobody", p, uid, gid)
		}
	}
	if uid, _ := owner(t, e.dir); uid != 0 {
		t.Errorf("existing workdir re-owned to %d", uid)
	}

	// An existing root file rewritten for nobody becomes nobody's.
	rootFile := writeTestFile(t, e.dir, "rootfile", []byte("r"))
	resp, body = e.postOctet(e.url("/files", "path", rootFile, "username", "nobody"), []byte("n"))
	wantStatus(t, resp, body, http.StatusOK)
	if uid, _ := owner(t, rootFile); uid != nobody {
		t.Errorf("rewritten file owned by %d", uid)
	}

	// Basic auth picks the user when there is no username parameter, and
	// the query parameter overrides it.
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("nobody:"))
	resp, body = e.postOctet(e.url("/files", "path", "basic.txt"), []byte("b"), "Authorization", basic)
	wantStatus(t, resp, body, http.StatusOK)
	if uid, _ := owner(t, filepath.Join(e.dir, "basic.txt")); uid != nobody {
		t.Errorf("basic-auth upload owned by %d", uid)
	}
	resp, body = e.postOctet(e.url("/files", "path", "override.txt", "username", "root"), []byte("o"), "Authorization", basic)
	wantStatus(t, resp, body, http.StatusOK)
	if uid, _ := owner(t, filepath.Join(e.dir, "override.txt")); uid != 0 {
		t.Errorf("username parameter did not override Basic auth: uid %d", uid)
	}
}

func TestUploadSymlinkTarget(t *testing.T) {
	e := newEnv(t, Options{})
	real := writeTestFile(t, e.dir, "real.txt", []byte("old"))
	link := filepath.Join(e.dir, "link.txt")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	resp, body := e.postOctet(e.url("/files", "path", link), []byte("new"), "X-Metadata-K", "v")
	wantStatus(t, resp, body, http.StatusOK)
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatal("symlink replaced")
	}
	if string(readFile(t, real)) != "new" {
		t.Fatal("target not rewritten")
	}
	if md := decodeEntries(t, body)[0].Metadata; md["k"] != "v" {
		t.Fatalf("metadata through symlink: %v", md)
	}
}

func TestUploadErrors(t *testing.T) {
	e := newEnv(t, Options{})
	file := writeTestFile(t, e.dir, "file", []byte("x"))
	if err := os.Mkdir(filepath.Join(e.dir, "adir"), 0o755); err != nil {
		t.Fatal(err)
	}
	octet := func(u string, hdr ...string) func() (*http.Response, []byte) {
		return func() (*http.Response, []byte) { return e.postOctet(u, []byte("data"), hdr...) }
	}
	mp := func(u string, parts ...part) func() (*http.Response, []byte) {
		return func() (*http.Response, []byte) { return e.postMultipart(u, parts) }
	}
	cases := []struct {
		name   string
		do     func() (*http.Response, []byte)
		status int
	}{
		{"octet without path", octet(e.url("/files")), 400},
		{"octet to a directory", octet(e.url("/files", "path", "adir")), 400},
		{"octet under a file", octet(e.url("/files", "path", filepath.Join(file, "x"))), 400},
		{"octet deep under a file", octet(e.url("/files", "path", filepath.Join(file, "x", "y"))), 400},
		{"unknown user", octet(e.url("/files", "path", "u.txt", "username", "no-such-user-wrenn")), 401},
		{"unsupported content encoding", octet(e.url("/files", "path", "e.txt"), "Content-Encoding", "br"), 400},
		{"multipart part without filename", mp(e.url("/files"), part{field: "file", data: []byte("x")}), 400},
		{"multipart duplicate path", mp(e.url("/files"),
			part{field: "file", filename: "dup", data: []byte("1")},
			part{field: "file", filename: "dup", data: []byte("2")}), 400},
		{"multipart path param with two parts", mp(e.url("/files", "path", "pp"),
			part{field: "file", filename: "a", data: []byte("1")},
			part{field: "file", filename: "b", data: []byte("2")}), 400},
		{"multipart to a directory", mp(e.url("/files"), part{field: "file", filename: "adir", data: []byte("1")}), 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := c.do()
			wantStatus(t, resp, body, c.status)
		})
	}
	t.Run("fifo target does not block", func(t *testing.T) {
		fifo := filepath.Join(e.dir, "fifo")
		if err := unix.Mkfifo(fifo, 0o644); err != nil {
			t.Fatal(err)
		}
		resp, body := e.postOctet(e.url("/files", "path", fifo), []byte("x"))
		wantStatus(t, resp, body, http.StatusBadRequest)
	})
	t.Run("unsupported content type", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, e.url("/files", "path", "t.txt"), strings.NewReader("a=b"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, body := e.do(req)
		wantStatus(t, resp, body, http.StatusBadRequest)
	})
	t.Run("multipart without boundary", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, e.url("/files"), strings.NewReader("x"))
		req.Header.Set("Content-Type", "multipart/form-data")
		resp, body := e.do(req)
		wantStatus(t, resp, body, http.StatusBadRequest)
	})
	t.Run("malformed multipart", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, e.url("/files"), strings.NewReader("--b\r\nbroken"))
		req.Header.Set("Content-Type", "multipart/form-data; boundary=b")
		resp, body := e.do(req)
		wantStatus(t, resp, body, http.StatusBadRequest)
	})
}

func TestUploadSizeLimit(t *testing.T) {
	const limit = 1000
	e := newEnv(t, Options{MaxUploadBytes: limit})
	cases := []struct {
		name   string
		body   io.Reader
		hdr    []string
		status int
		path   string
	}{
		{"exactly at limit", bytes.NewReader(make([]byte, limit)), nil, 200, "ok.bin"},
		{"declared too large", bytes.NewReader(make([]byte, 5000)), nil, 413, "big1.bin"},
		// A reader that is not a *bytes.Reader gives a chunked body of
		// unknown length: the limit trips while streaming.
		{"chunked too large", io.MultiReader(bytes.NewReader(make([]byte, 3000))), nil, 413, "big2.bin"},
		{"gzip bomb", bytes.NewReader(gz(t, make([]byte, 100000))), []string{"Content-Encoding", "gzip"}, 413, "big3.bin"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, e.url("/files", "path", c.path), c.body)
			req.Header.Set("Content-Type", "application/octet-stream")
			for i := 0; i+1 < len(c.hdr); i += 2 {
				req.Header.Set(c.hdr[i], c.hdr[i+1])
			}
			resp, body := e.do(req)
			wantStatus(t, resp, body, c.status)
			_, err := os.Stat(filepath.Join(e.dir, c.path))
			if (err == nil) != (c.status == 200) {
				t.Fatalf("file exists=%v after status %d", err == nil, c.status)
			}
			if c.status == 413 && !strings.Contains(string(body), "limit of 1000 bytes") {
				t.Fatalf("message %s", body)
			}
		})
	}
	t.Run("multipart over limit", func(t *testing.T) {
		resp, body := e.postMultipart(e.url("/files"), []part{{field: "file", filename: "mp.bin", data: make([]byte, 2000)}})
		wantStatus(t, resp, body, http.StatusRequestEntityTooLarge)
	})
}
