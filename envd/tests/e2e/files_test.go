package e2e

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	fspb "github.com/wrenn-dev/envd/internal/gen/filesystem"
	"github.com/wrenn-dev/envd/internal/gen/process/processconnect"
)

func processFor(e *envd, c *http.Client, opts []connect.ClientOption) processconnect.ProcessClient {
	return processconnect.NewProcessClient(c, e.base, opts...)
}

func waitFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil && len(b) > 0 && b[len(b)-1] == '\n' {
			return strings.TrimSpace(string(b))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never written", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func filesURL(e *envd, path string, q ...string) string {
	v := url.Values{"path": {path}}
	for i := 0; i+1 < len(q); i += 2 {
		v.Set(q[i], q[i+1])
	}
	return e.base + "/files?" + v.Encode()
}

func TestFilesRoundTrip(t *testing.T) {
	e := startEnvd(t)
	dir := t.TempDir()

	// Octet-stream upload creates parents; download returns the bytes.
	target := filepath.Join(dir, "a/b/c.txt")
	resp := must(http.Post(filesURL(e, target), "application/octet-stream", strings.NewReader("hello files")))
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
	var infos []map[string]any
	if err := json.Unmarshal(body, &infos); err != nil || len(infos) != 1 || infos[0]["path"] != target {
		t.Fatalf("upload reply %s", body)
	}
	resp = must(http.Get(filesURL(e, target)))
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != "hello files" {
		t.Fatalf("download %q", got)
	}

	// Multipart with several files.
	var mp bytes.Buffer
	w := multipart.NewWriter(&mp)
	for i := range 3 {
		fw := must(w.CreateFormFile("file", filepath.Join(dir, fmt.Sprintf("m%d", i))))
		fmt.Fprintf(fw, "part %d", i)
	}
	w.Close()
	resp = must(http.Post(e.base+"/files", w.FormDataContentType(), &mp))
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("multipart: %d %s", resp.StatusCode, body)
	}
	for i := range 3 {
		if b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("m%d", i))); string(b) != fmt.Sprintf("part %d", i) {
			t.Fatalf("m%d = %q", i, b)
		}
	}

	// Gzip in both directions, and Range.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(bytes.Repeat([]byte("0123456789"), 1000))
	zw.Close()
	req := must(http.NewRequest("POST", filesURL(e, filepath.Join(dir, "z")), &gz))
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Encoding", "gzip")
	resp = must(http.DefaultClient.Do(req))
	resp.Body.Close()
	if b, _ := os.ReadFile(filepath.Join(dir, "z")); len(b) != 10000 {
		t.Fatalf("gzip upload wrote %d bytes", len(b))
	}
	req = must(http.NewRequest("GET", filesURL(e, filepath.Join(dir, "z")), nil))
	req.Header.Set("Range", "bytes=10-14")
	resp = must(http.DefaultClient.Do(req))
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || string(got) != "01234" {
		t.Fatalf("range: %d %q", resp.StatusCode, got)
	}

	// Errors: missing file, directory, unknown user.
	for _, c := range []struct {
		url  string
		code int
	}{
		{filesURL(e, filepath.Join(dir, "missing")), 404},
		{filesURL(e, dir), 400},
		{filesURL(e, target, "username", "no-such-user"), 401},
	} {
		resp = must(http.Get(c.url))
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("GET %s: %d, want %d", c.url, resp.StatusCode, c.code)
		}
	}
}

// TestFilesLargeStreamed moves 200 MiB each way and checks envd never holds
// the file in memory: its peak RSS stays under 64 MiB.
func TestFilesLargeStreamed(t *testing.T) {
	e := startEnvd(t)
	const size = 200 << 20
	target := filepath.Join(t.TempDir(), "big.bin")

	src := io.LimitReader(&pattern{}, size)
	h := sha256.New()
	resp := must(http.Post(filesURL(e, target), "application/octet-stream", io.TeeReader(src, h)))
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("upload status %d", resp.StatusCode)
	}
	want := h.Sum(nil)

	resp = must(http.Get(filesURL(e, target)))
	h2 := sha256.New()
	n, _ := io.Copy(h2, resp.Body)
	resp.Body.Close()
	if n != size || !bytes.Equal(h2.Sum(nil), want) {
		t.Fatalf("download: %d bytes, hash match %v", n, bytes.Equal(h2.Sum(nil), want))
	}
	if hwm := e.statusKiB("VmHWM"); hwm > 64<<10 {
		t.Fatalf("envd peak RSS %d KiB > 64 MiB", hwm)
	} else {
		t.Logf("envd peak RSS after 2x200 MiB: %d KiB", hwm)
	}
}

// pattern is an endless, non-compressible-looking byte source.
type pattern struct{ n uint64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		p.n = p.n*6364136223846793005 + 1442695040888963407
		b[i] = byte(p.n >> 56)
	}
	return len(b), nil
}

func TestFilesystemRPCs(t *testing.T) {
	e := startEnvd(t)
	ctx := ctxT(t, 20*time.Second)
	fc := e.fs(connect.WithProtoJSON())
	dir := t.TempDir()

	mk := must(fc.MakeDir(ctx, connect.NewRequest(&fspb.MakeDirRequest{Path: dir + "/x/y"})))
	if mk.Msg.GetEntry().GetType() != fspb.FileType_FILE_TYPE_DIRECTORY {
		t.Fatalf("makedir entry %v", mk.Msg.GetEntry())
	}
	if _, err := fc.MakeDir(ctx, connect.NewRequest(&fspb.MakeDirRequest{Path: dir + "/x/y"})); connect.CodeOf(err) != connect.CodeAlreadyExists {
		t.Fatalf("makedir twice: %v", err)
	}
	os.WriteFile(dir+"/x/y/f", []byte("abc"), 0o644)
	st := must(fc.Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: dir + "/x/y/f"})))
	if st.Msg.GetEntry().GetSize() != 3 || st.Msg.GetEntry().GetType() != fspb.FileType_FILE_TYPE_FILE {
		t.Fatalf("stat %v", st.Msg.GetEntry())
	}
	ls := must(fc.ListDir(ctx, connect.NewRequest(&fspb.ListDirRequest{Path: dir, Depth: 3})))
	if len(ls.Msg.GetEntries()) != 3 {
		t.Fatalf("listdir depth 3: %v", ls.Msg.GetEntries())
	}
	must(fc.Move(ctx, connect.NewRequest(&fspb.MoveRequest{Source: dir + "/x/y/f", Destination: dir + "/g"})))
	must(fc.Remove(ctx, connect.NewRequest(&fspb.RemoveRequest{Path: dir + "/x"})))
	for _, p := range []string{dir + "/x", dir + "/x/y/f"} {
		if _, err := fc.Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: p})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("stat removed %s: %v", p, err)
		}
	}
	if _, err := fc.ListDir(ctx, connect.NewRequest(&fspb.ListDirRequest{Path: dir + "/g"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("listdir on a file: %v", err)
	}

	// Streaming watch.
	w := must(fc.WatchDir(ctx, connect.NewRequest(&fspb.WatchDirRequest{Path: dir})))
	defer w.Close()
	if !w.Receive() || w.Msg().GetStart() == nil {
		t.Fatalf("no watch start: %v", w.Err())
	}
	os.WriteFile(dir+"/new", []byte("x"), 0o644)
	for w.Receive() {
		ev := w.Msg().GetFilesystem()
		if ev != nil && ev.GetName() == "new" && ev.GetType() == fspb.EventType_EVENT_TYPE_CREATE {
			break
		}
	}

	// Polling watcher.
	cw := must(fc.CreateWatcher(ctx, connect.NewRequest(&fspb.CreateWatcherRequest{Path: dir})))
	id := cw.Msg.GetWatcherId()
	os.Remove(dir + "/new")
	var seen bool
	for i := 0; i < 50 && !seen; i++ {
		ev := must(fc.GetWatcherEvents(ctx, connect.NewRequest(&fspb.GetWatcherEventsRequest{WatcherId: id})))
		for _, x := range ev.Msg.GetEvents() {
			seen = seen || (x.GetName() == "new" && x.GetType() == fspb.EventType_EVENT_TYPE_REMOVE)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !seen {
		t.Fatal("polling watcher missed the remove")
	}
	must(fc.RemoveWatcher(ctx, connect.NewRequest(&fspb.RemoveWatcherRequest{WatcherId: id})))
	if _, err := fc.GetWatcherEvents(ctx, connect.NewRequest(&fspb.GetWatcherEventsRequest{WatcherId: id})); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("removed watcher: %v", err)
	}
}
