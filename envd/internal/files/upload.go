package files

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/wrenn-dev/envd/internal/entry"
	"github.com/wrenn-dev/envd/internal/permissions"
)

// uploadEntry is one element of the POST /files response (E2B's EntryInfo
// schema of the plain routes, not the protobuf one).
type uploadEntry struct {
	Path     string            `json:"path"`
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

const metadataHeaderPrefix = "X-Metadata-"

// Metadata limits. An xattr name ("user.e2b." + key) may have 255 bytes, and
// ext4 keeps all of an inode's xattrs in one 4 KiB block.
const (
	maxMetadataKeyLen   = 255 - len(entry.MetadataPrefix)
	maxMetadataTotalLen = 4096
)

// upload serves POST /files?path=&username=. The body is either
// multipart/*, each part named "file" written to the `path` parameter or,
// without one, to the path in its filename; or application/octet-stream
// written to `path` (required). Content-Encoding: gzip is undone while
// streaming. X-Metadata-<key> headers replace the user.e2b.* xattrs of every
// written file. Each file is streamed to disk part by part through one
// pooled buffer, never held in memory.
func (h *Handler) upload(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	defer r.Body.Close()
	q := r.URL.Query()
	signed, aerr := h.authorize(r, q, opWrite)
	if aerr != nil {
		h.fail(w, r, aerr)
		return
	}
	u, aerr := h.resolveUser(r, q.Get("username"), signed)
	if aerr != nil {
		h.fail(w, r, aerr)
		return
	}
	md, aerr := metadataFromHeaders(r.Header)
	if aerr != nil {
		h.fail(w, r, aerr)
		return
	}
	body, aerr := h.uploadBody(r)
	if aerr != nil {
		h.fail(w, r, aerr)
		return
	}
	defer body.Close()

	ct := r.Header.Get("Content-Type")
	mediaType, params, _ := mime.ParseMediaType(ct)
	var entries []uploadEntry
	switch {
	case mediaType == "application/octet-stream":
		entries, aerr = h.uploadRaw(r, q, body, u, md)
	case strings.HasPrefix(mediaType, "multipart/"):
		entries, aerr = h.uploadMultipart(r, q, body, params["boundary"], u, md)
	default:
		aerr = newError(http.StatusBadRequest, nil,
			"unsupported content type %q, expected multipart/form-data or application/octet-stream", ct)
	}
	if aerr != nil {
		h.fail(w, r, aerr)
		return
	}
	h.log.Debug("files uploaded", "user", u.Name, "files", len(entries), "duration", time.Since(start))
	writeJSON(w, http.StatusOK, entries)
}

// uploadBody undoes Content-Encoding and applies MaxUploadBytes to what
// comes out. Closing it does not close r.Body.
func (h *Handler) uploadBody(r *http.Request) (io.ReadCloser, *apiError) {
	limit := h.opts.MaxUploadBytes
	var body io.ReadCloser = io.NopCloser(r.Body)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
		if limit > 0 && r.ContentLength > limit {
			return nil, tooLarge(limit)
		}
	case "gzip", "x-gzip":
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, newError(http.StatusBadRequest, err, "error decompressing request body: %v", err)
		}
		body = zr
	default:
		return nil, newError(http.StatusBadRequest, nil,
			"unsupported Content-Encoding %q, supported: gzip, identity", enc)
	}
	if limit > 0 {
		body = &limitedBody{ReadCloser: body, limit: limit, left: limit}
	}
	return body, nil
}

func (h *Handler) uploadRaw(r *http.Request, q url.Values, body io.Reader, u *permissions.User, md map[string]string) ([]uploadEntry, *apiError) {
	p := q.Get("path")
	if p == "" {
		return nil, newError(http.StatusBadRequest, nil, "path query parameter is required for raw body upload")
	}
	path, aerr := h.expand(p, u)
	if aerr != nil {
		return nil, aerr
	}
	e, aerr := h.writeFile(r.Context(), path, body, u, md)
	if aerr != nil {
		return nil, aerr
	}
	return []uploadEntry{*e}, nil
}

func (h *Handler) uploadMultipart(r *http.Request, q url.Values, body io.Reader, boundary string, u *permissions.User, md map[string]string) ([]uploadEntry, *apiError) {
	if boundary == "" {
		return nil, newError(http.StatusBadRequest, nil, "multipart body without a boundary")
	}
	mr := multipart.NewReader(body, boundary)
	entries := []uploadEntry{}
	seen := map[string]bool{}
	for {
		if err := r.Context().Err(); err != nil {
			return nil, newError(http.StatusBadRequest, err, "request cancelled: %v", err)
		}
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return entries, nil
		}
		if err != nil {
			return nil, bodyError(err, "error reading multipart form")
		}
		e, aerr := h.uploadPart(r, q, part, u, md, seen)
		part.Close()
		if aerr != nil {
			return nil, aerr
		}
		if e != nil {
			entries = append(entries, *e)
		}
	}
}

// uploadPart writes one part named "file"; other parts are skipped.
func (h *Handler) uploadPart(r *http.Request, q url.Values, part *multipart.Part, u *permissions.User, md map[string]string, seen map[string]bool) (*uploadEntry, *apiError) {
	if part.FormName() != "file" {
		return nil, nil
	}
	p := q.Get("path")
	if p == "" {
		var err error
		if p, err = partFilename(part); err != nil {
			return nil, newError(http.StatusBadRequest, err, "error getting the file name of a multipart part: %v", err)
		}
	}
	path, aerr := h.expand(p, u)
	if aerr != nil {
		return nil, aerr
	}
	if seen[path] {
		return nil, newError(http.StatusBadRequest, nil,
			"you cannot upload multiple files to the same path '%s' in one upload request, only the first specified file was uploaded", path)
	}
	seen[path] = true
	return h.writeFile(r.Context(), path, part, u, md)
}

// partFilename is the part's Content-Disposition filename, kept whole:
// unlike (*multipart.Part).FileName it does not cut it to its last element,
// because the SDKs send the target path there.
func partFilename(part *multipart.Part) (string, error) {
	_, params, err := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
	if err != nil {
		return "", fmt.Errorf("parse Content-Disposition: %w", err)
	}
	name, ok := params["filename"]
	if !ok || name == "" {
		return "", errors.New("filename not found in Content-Disposition header")
	}
	return name, nil
}

// metadataFromHeaders collects X-Metadata-<key> headers: keys lowercased
// (HTTP header names are case-insensitive), first value wins, empty keys
// dropped. Keys and values must be printable US-ASCII within xattr limits.
func metadataFromHeaders(hdr http.Header) (map[string]string, *apiError) {
	md := map[string]string{}
	total := 0
	for name, values := range hdr {
		if len(values) == 0 || len(name) <= len(metadataHeaderPrefix) ||
			!strings.EqualFold(name[:len(metadataHeaderPrefix)], metadataHeaderPrefix) {
			continue
		}
		key := strings.ToLower(name[len(metadataHeaderPrefix):])
		val := values[0]
		if len(key) > maxMetadataKeyLen {
			return nil, newError(http.StatusBadRequest, nil, "invalid metadata: key %q exceeds %d bytes", key, maxMetadataKeyLen)
		}
		for _, s := range []string{key, val} {
			for i := 0; i < len(s); i++ {
				if s[i] < 0x20 || s[i] > 0x7e {
					return nil, newError(http.StatusBadRequest, nil,
						"invalid metadata: %q contains non-printable-ASCII byte 0x%02x", key, s[i])
				}
			}
		}
		total += len(entry.MetadataPrefix) + len(key) + len(val)
		md[key] = val
	}
	if total > maxMetadataTotalLen {
		return nil, newError(http.StatusBadRequest, nil, "invalid metadata: total size %d exceeds %d bytes", total, maxMetadataTotalLen)
	}
	return md, nil
}
