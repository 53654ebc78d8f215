// Package files serves envd's plain-HTTP file routes with the behaviour and
// error shape ({"message","code"}) of E2B's envd: GET /files (download),
// POST /files (upload) and POST /files/compose (concatenate uploaded
// chunks). It resolves each request's user itself, because the `username`
// query parameter overrides Basic auth here, and it owns the signed-URL
// check of GET/POST /files.
//
// Authentication contract with the server's token middleware: with a token
// in force, GET/HEAD/POST /files may come in either with X-Access-Token or
// with a signed URL; the middleware lets the latter through when
// SignatureValid says so. The handlers then repeat E2B's whole check (a
// wrong X-Access-Token is refused even next to a valid signature), so they
// are safe behind a middleware that exempts /files entirely. Compose takes
// the token only.
//
// Files are read and written by envd itself (root in the guest), as E2B
// does: the user decides how relative paths resolve and who owns what an
// upload creates, not what may be read. It imports
// envd/internal/{state,permissions,entry} and nothing else from envd.
package files

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"unicode/utf8"

	"github.com/wrenn-dev/envd/internal/permissions"
	"github.com/wrenn-dev/envd/internal/state"
)

// DefaultBufferSize is the copy buffer used for uploads and gzip downloads.
const DefaultBufferSize = 256 << 10

// Options tune a Handler. The zero value is usable.
type Options struct {
	// MaxUploadBytes caps the decoded (gunzipped) body of one POST /files,
	// multipart framing included. 0 means no cap. A larger body gets 413.
	MaxUploadBytes int64
	// Token returns the access token in force and whether there is one; it
	// is needed raw to recompute URL signatures. Wire it to
	// (*state.State).Token. Nil means no token is ever in force.
	Token func() (token string, ok bool)
	// BufferSize is the copy buffer size; 0 means DefaultBufferSize.
	BufferSize int
}

// Handler serves the /files routes. It is safe for concurrent use.
type Handler struct {
	st   *state.State
	log  *slog.Logger
	opts Options
	bufs sync.Pool

	// confine, when set (tests and fuzzing only), refuses every path that
	// does not lie under it, so arbitrary input cannot touch the host.
	confine string
}

// New returns a Handler reading defaults (user, workdir) from st.
func New(st *state.State, log *slog.Logger, opts Options) *Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.BufferSize <= 0 {
		opts.BufferSize = DefaultBufferSize
	}
	h := &Handler{st: st, log: log, opts: opts}
	h.bufs.New = func() any {
		b := make([]byte, h.opts.BufferSize)
		return &b
	}
	return h
}

// Register mounts GET /files (HEAD included), POST /files and
// POST /files/compose on mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /files", h.download)
	mux.HandleFunc("POST /files", h.upload)
	mux.HandleFunc("POST /files/compose", h.compose)
}

func (h *Handler) getBuf() *[]byte  { return h.bufs.Get().(*[]byte) }
func (h *Handler) putBuf(b *[]byte) { h.bufs.Put(b) }

// resolveUser picks the user a /files request acts as. A request let in by
// its signature acts only as the user the signature covers (the `username`
// parameter, else the default user): an Authorization header cannot widen a
// signed URL. Otherwise `username` overrides Basic auth, which overrides the
// default user.
func (h *Handler) resolveUser(r *http.Request, name string, signed bool) (*permissions.User, *apiError) {
	var (
		u   *permissions.User
		err error
	)
	if signed {
		if name == "" {
			name = h.st.DefaultUser()
		}
		u, err = permissions.Lookup(name)
	} else {
		u, err = permissions.Resolve(r.Header, name, h.st)
	}
	if err != nil {
		return nil, newError(http.StatusUnauthorized, err, "error resolving user: %v", err)
	}
	return u, nil
}

// expand makes p absolute for u, as every route does with its paths.
func (h *Handler) expand(p string, u *permissions.User) (string, *apiError) {
	abs, err := permissions.ExpandPath(p, u, h.st.DefaultWorkdir())
	if err != nil {
		return "", newError(http.StatusBadRequest, err, "error resolving path %q: %v", p, err)
	}
	if !utf8.ValidString(abs) {
		// JSON replies and the protobuf RPCs cannot carry such a name.
		return "", newError(http.StatusBadRequest, nil, "path %q is not valid UTF-8", abs)
	}
	if h.confine != "" && !within(abs, h.confine) {
		return "", newError(http.StatusBadRequest, nil, "path %q is outside %s", abs, h.confine)
	}
	return abs, nil
}

func within(p, dir string) bool {
	return len(p) > len(dir) && p[:len(dir)] == dir && p[len(dir)] == '/'
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
