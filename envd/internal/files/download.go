package files

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// download serves GET (and HEAD) /files?path=&username=.
//
// Identity responses go through http.ServeContent: Range (206), If-Range,
// If-Modified-Since and If-None-Match (304) against Last-Modified and an
// ETag built from inode, size and mtime, and sendfile from the page cache.
// With Accept-Encoding: gzip and no Range or conditional header the file is
// gzipped on the fly (no Content-Length). Files that stat as empty but have
// content (procfs, sysfs) are streamed without Content-Length or ranges.
func (h *Handler) download(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	q := r.URL.Query()
	signed, aerr := h.authorize(r, q, opRead)
	if aerr != nil {
		h.fail(w, r, aerr)
		return
	}
	u, aerr := h.resolveUser(r, q.Get("username"), signed)
	if aerr != nil {
		h.fail(w, r, aerr)
		return
	}
	path, aerr := h.expand(q.Get("path"), u)
	if aerr != nil {
		h.fail(w, r, aerr)
		return
	}
	f, fi, aerr := openForRead(path)
	if aerr != nil {
		h.fail(w, r, aerr)
		return
	}
	defer f.Close()

	encoding, err := negotiateEncoding(r.Header.Get("Accept-Encoding"))
	if err != nil {
		h.fail(w, r, newError(http.StatusNotAcceptable, err, "%v", err))
		return
	}
	if hasRangeOrConditional(r.Header) {
		encoding = "identity"
	}

	hdr := w.Header()
	hdr.Set("Vary", "Accept-Encoding")
	hdr.Set("Content-Type", contentType(path))
	if cd := mime.FormatMediaType("attachment", map[string]string{"filename": filepath.Base(path)}); cd != "" {
		hdr.Set("Content-Disposition", cd)
	}

	var n int64
	switch {
	case encoding == "gzip":
		n, err = h.sendGzip(w, r, f)
	case fi.Size() == 0:
		n, err = h.sendUnsized(w, r, f, fi)
	default:
		hdr.Set("ETag", etag(fi))
		http.ServeContent(w, r, filepath.Base(path), fi.ModTime(), f)
		n = fi.Size()
	}
	if err != nil {
		// The status line is gone; all that is left is to cut the body short.
		h.log.Warn("file download interrupted", "path", path, "err", err)
		return
	}
	h.log.Debug("file downloaded", "path", path, "user", u.Name, "encoding", encoding,
		"file_bytes", n, "duration", time.Since(start))
}

// openForRead opens a regular file without blocking on FIFOs and refuses
// anything else with the status E2B uses.
func openForRead(path string) (*os.File, fs.FileInfo, *apiError) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ENOTDIR) {
			err = fmt.Errorf("%w (%w)", fs.ErrNotExist, err)
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, newError(http.StatusNotFound, err, "path '%s' does not exist", path)
		}
		return nil, nil, osError(err, "error opening file '%s'", path)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, osError(err, "error checking file '%s'", path)
	}
	switch {
	case fi.IsDir():
		f.Close()
		return nil, nil, newError(http.StatusBadRequest, nil, "path '%s' is a directory", path)
	case !fi.Mode().IsRegular():
		f.Close()
		return nil, nil, newError(http.StatusBadRequest, nil, "path '%s' is not a regular file", path)
	}
	return f, fi, nil
}

func (h *Handler) sendGzip(w http.ResponseWriter, r *http.Request, f *os.File) (int64, error) {
	w.Header().Set("Content-Encoding", "gzip")
	w.Header().Del("Content-Length")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return 0, nil
	}
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return 0, fmt.Errorf("gzip writer: %w", err)
	}
	buf := h.getBuf()
	defer h.putBuf(buf)
	// The struct hides (*os.File).WriteTo so the pooled buffer is used.
	n, err := io.CopyBuffer(zw, struct{ io.Reader }{f}, *buf)
	if err != nil {
		return n, fmt.Errorf("gzip copy: %w", err)
	}
	if err := zw.Close(); err != nil {
		return n, fmt.Errorf("gzip close: %w", err)
	}
	return n, nil
}

// sendUnsized serves a file whose size reads 0: truly empty files the usual
// way, pseudo-files (whose size is not known up front) as a plain stream.
func (h *Handler) sendUnsized(w http.ResponseWriter, r *http.Request, f *os.File, fi fs.FileInfo) (int64, error) {
	buf := h.getBuf()
	defer h.putBuf(buf)
	first, err := f.Read(*buf)
	if first == 0 && (err == nil || errors.Is(err, io.EOF)) {
		w.Header().Set("ETag", etag(fi))
		http.ServeContent(w, r, fi.Name(), fi.ModTime(), emptyReadSeeker{})
		return 0, nil
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("read: %w", err)
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return 0, nil
	}
	if _, err := w.Write((*buf)[:first]); err != nil {
		return 0, fmt.Errorf("write: %w", err)
	}
	n, err := io.CopyBuffer(w, struct{ io.Reader }{f}, *buf)
	return n + int64(first), err
}

type emptyReadSeeker struct{}

func (emptyReadSeeker) Read([]byte) (int, error)       { return 0, io.EOF }
func (emptyReadSeeker) Seek(int64, int) (int64, error) { return 0, nil }

func etag(fi fs.FileInfo) string {
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	return fmt.Sprintf(`"%x-%x-%x"`, ino, fi.Size(), fi.ModTime().UnixNano())
}

func contentType(path string) string {
	if t := mime.TypeByExtension(filepath.Ext(path)); t != "" {
		return t
	}
	return "application/octet-stream"
}

func hasRangeOrConditional(h http.Header) bool {
	for _, k := range []string{"Range", "If-Range", "If-Modified-Since", "If-None-Match", "If-Match", "If-Unmodified-Since"} {
		if h.Get(k) != "" {
			return true
		}
	}
	return false
}

// negotiateEncoding picks "gzip" or "identity" from an Accept-Encoding
// header (RFC 9110 12.5.3): the highest-q acceptable coding wins, identity
// is acceptable unless refused with q=0 (directly or through "*;q=0"), and
// "*" stands for gzip when identity is refused.
func negotiateEncoding(header string) (string, error) {
	if strings.TrimSpace(header) == "" {
		return "identity", nil
	}
	type coding struct {
		name string
		q    float64
	}
	var codings []coding
	identityQ, gzipQ, starQ := -1.0, -1.0, -1.0
	for _, item := range strings.Split(header, ",") {
		name, params, _ := strings.Cut(item, ";")
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "" {
			continue
		}
		q := 1.0
		for _, p := range strings.Split(params, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
			if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && f >= 0 && f <= 1 {
					q = f
				}
			}
		}
		switch name {
		case "identity":
			identityQ = q
		case "gzip", "x-gzip":
			gzipQ = q
		case "*":
			starQ = q
		}
		codings = append(codings, coding{name, q})
	}
	identityRefused := identityQ == 0 || (identityQ < 0 && starQ == 0)
	sort.SliceStable(codings, func(i, j int) bool { return codings[i].q > codings[j].q })
	for _, c := range codings {
		if c.q == 0 {
			continue
		}
		switch c.name {
		case "gzip", "x-gzip":
			return "gzip", nil
		case "identity":
			return "identity", nil
		case "*":
			if !identityRefused {
				return "identity", nil
			}
			if gzipQ != 0 {
				return "gzip", nil
			}
		}
	}
	if !identityRefused {
		return "identity", nil
	}
	return "", errors.New("no acceptable encoding: supported are gzip and identity")
}
