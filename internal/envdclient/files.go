package envdclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// FileEntry is one element of POST /files' reply.
type FileEntry struct {
	Path string `json:"path"`
	Name string `json:"name"`
	Type string `json:"type"`
}

// Upload streams r into the guest file at path (parent directories are
// created; an existing file is replaced).
func (c *Client) Upload(ctx context.Context, path string, r io.Reader) (FileEntry, error) {
	u := baseURL + "/files?" + url.Values{"path": {path}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, r)
	if err != nil {
		return FileEntry{}, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.http.Do(req)
	if err != nil {
		return FileEntry{}, fmt.Errorf("upload %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return FileEntry{}, httpError("upload "+path, resp)
	}
	var entries []FileEntry
	if err := json.NewDecoder(resp.Body).Decode(&entries); err != nil {
		return FileEntry{}, fmt.Errorf("upload %s: decode reply: %w", path, err)
	}
	if len(entries) == 0 {
		return FileEntry{}, fmt.Errorf("upload %s: empty reply", path)
	}
	return entries[0], nil
}

// Download streams the guest file at path into w and returns the number of
// bytes copied.
func (c *Client) Download(ctx context.Context, path string, w io.Writer) (int64, error) {
	u := baseURL + "/files?" + url.Values{"path": {path}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("download %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, httpError("download "+path, resp)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("download %s: %w", path, err)
	}
	return n, nil
}
