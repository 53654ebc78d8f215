package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	fspb "github.com/wrenn-dev/wrenn-sandbox/proto/envd/gen/filesystem"
)

// envdURL is the base of envd's plain routes; the host is never resolved
// (the client's dialer decides where bytes go).
const envdURL = "http://envd"

// WriteSpec describes a file to write into a sandbox.
type WriteSpec struct {
	Path  string // absolute, or relative to the owner's home
	Mode  uint32 // permission bits; 0 = envd's default
	Owner string // guest user that will own it ("" = default user)
	Size  int64  // expected length; > 0 makes another length an error
}

// countingReader counts what passes through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// WriteFile streams r into the guest. The data goes to a temporary file
// next to the target, which gets its mode and is then renamed over the
// target, so readers see the old file or the whole new one, never a part.
// It returns the absolute path written and the byte count.
func (m *Manager) WriteFile(ctx context.Context, sid string, spec WriteSpec, r io.Reader) (string, int64, error) {
	c, err := m.envdFor(sid)
	if err != nil {
		return "", 0, err
	}
	dir, base := path.Split(spec.Path)
	if base == "" || base == "." || base == ".." || strings.ContainsRune(spec.Path, 0) {
		return "", 0, errdefs.Errorf(errdefs.ErrInvalidArgument, "write file: %q does not name a file", spec.Path)
	}
	if spec.Mode > 0o7777 {
		return "", 0, errdefs.Errorf(errdefs.ErrInvalidArgument, "write file: mode %o", spec.Mode)
	}
	rnd := make([]byte, 6)
	_, _ = rand.Read(rnd)
	tmp := dir + ".wrenn-upload-" + hex.EncodeToString(rnd)
	cr := &countingReader{r: r}
	q := url.Values{"path": {tmp}}
	if spec.Owner != "" {
		q.Set("username", spec.Owner)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, envdURL+"/files?"+q.Encode(), cr)
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		m.removeGuestFile(c, tmp, spec.Owner)
		if ctx.Err() != nil {
			return "", cr.n, fmt.Errorf("write file %s: %w", spec.Path, ctx.Err())
		}
		return "", cr.n, fmt.Errorf("write file %s: %w", spec.Path, envdError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		m.removeGuestFile(c, tmp, spec.Owner)
		return "", cr.n, fmt.Errorf("write file %s: %w", spec.Path, envdError(readHTTPError("upload", resp)))
	}
	var entries []envdclient.FileEntry
	if err := json.NewDecoder(resp.Body).Decode(&entries); err != nil || len(entries) == 0 {
		m.removeGuestFile(c, tmp, spec.Owner)
		return "", cr.n, fmt.Errorf("write file %s: bad reply from envd: %v", spec.Path, err)
	}
	absTmp := entries[0].Path
	if spec.Size > 0 && cr.n != spec.Size {
		m.removeGuestFile(c, absTmp, spec.Owner)
		return "", cr.n, errdefs.Errorf(errdefs.ErrInvalidArgument, "write file %s: got %d bytes, the header said %d", spec.Path, cr.n, spec.Size)
	}
	if spec.Mode != 0 {
		if err := m.chmod(ctx, sid, absTmp, spec.Mode, spec.Owner); err != nil {
			m.removeGuestFile(c, absTmp, spec.Owner)
			return "", cr.n, fmt.Errorf("write file %s: %w", spec.Path, err)
		}
	}
	final := path.Join(path.Dir(absTmp), base)
	mv := connect.NewRequest(&fspb.MoveRequest{Source: absTmp, Destination: final})
	asUser(mv.Header(), spec.Owner)
	if _, err := c.Filesystem.Move(ctx, mv); err != nil {
		m.removeGuestFile(c, absTmp, spec.Owner)
		return "", cr.n, fmt.Errorf("write file %s: %w", spec.Path, envdError(err))
	}
	return final, cr.n, nil
}

// chmod sets a guest file's mode through the guest's chmod.
func (m *Manager) chmod(ctx context.Context, sid, p string, mode uint32, user string) error {
	var out collectSink
	exit, err := m.Exec(ctx, sid, ExecSpec{Cmd: "chmod", Args: []string{fmt.Sprintf("%04o", mode), p}, User: user, Timeout: 30 * time.Second}, &out)
	if err != nil {
		return fmt.Errorf("chmod: %w", err)
	}
	if exit.ExitCode != 0 {
		return errdefs.Errorf(errdefs.ErrPermissionDenied, "chmod %o: %s", mode, strings.TrimSpace(out.stderr.String()))
	}
	return nil
}

// removeGuestFile deletes a temporary upload, best effort.
func (m *Manager) removeGuestFile(c *envdclient.Client, p, user string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := connect.NewRequest(&fspb.RemoveRequest{Path: p})
	asUser(req.Header(), user)
	if _, err := c.Filesystem.Remove(ctx, req); err != nil {
		m.log.Debug("remove temporary upload", "path", p, "err", err)
	}
}

// OpenFile opens a guest file for reading; size is -1 when unknown. The
// caller closes the reader.
func (m *Manager) OpenFile(ctx context.Context, sid, p, user string) (io.ReadCloser, int64, error) {
	if p == "" {
		return nil, 0, errdefs.Errorf(errdefs.ErrInvalidArgument, "read file: empty path")
	}
	c, err := m.envdFor(sid)
	if err != nil {
		return nil, 0, err
	}
	// envd streams downloads without a length: ask for it first.
	st := connect.NewRequest(&fspb.StatRequest{Path: p})
	asUser(st.Header(), user)
	info, err := c.Filesystem.Stat(ctx, st)
	if err != nil {
		return nil, 0, fmt.Errorf("read file %s: %w", p, envdError(err))
	}
	if info.Msg.GetEntry().GetType() == fspb.FileType_FILE_TYPE_DIRECTORY {
		return nil, 0, errdefs.Errorf(errdefs.ErrInvalidArgument, "read file %s: is a directory", p)
	}
	q := url.Values{"path": {p}}
	if user != "" {
		q.Set("username", user)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, envdURL+"/files?"+q.Encode(), nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("read file %s: %w", p, envdError(err))
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, 0, fmt.Errorf("read file %s: %w", p, envdError(readHTTPError("download", resp)))
	}
	size := resp.ContentLength
	if size < 0 {
		size = info.Msg.GetEntry().GetSize()
	}
	return resp.Body, size, nil
}

// readHTTPError reads an error reply of envd's plain routes.
func readHTTPError(route string, resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	msg := string(bytes.TrimSpace(body))
	var j struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &j) == nil && j.Message != "" {
		msg = j.Message
	}
	return &envdclient.HTTPError{Route: route, Status: resp.StatusCode, Message: msg}
}

// collectSink keeps a command's output in memory.
type collectSink struct {
	stdout, stderr bytes.Buffer
}

func (s *collectSink) Started(uint32) error  { return nil }
func (s *collectSink) Stdout(p []byte) error { s.stdout.Write(p); return nil }
func (s *collectSink) Stderr(p []byte) error { s.stderr.Write(p); return nil }
