package files

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Signed-URL operations, as the SDKs name them.
const (
	opRead  = "read"
	opWrite = "write"
)

const accessTokenHeader = "X-Access-Token"

var (
	errNoSignature  = errors.New("missing signature query parameter")
	errBadSignature = errors.New("invalid signature")
	errExpired      = errors.New("signature is already expired")
	errBadExpiry    = errors.New("invalid signature_expiration query parameter")
	errTokenHeader  = errors.New("access token present in header but does not match")
)

// Sign returns the signature the SDKs put in a signed /files URL:
// "v1_" + unpadded standard base64 of
// sha256("<path>:<operation>:<username>:<token>[:<expiration>]"), where path
// and username are the raw query values ("" when absent), operation is
// "read" or "write", and expiration (unix seconds) is present only when the
// URL carries signature_expiration.
func Sign(path, operation, username, token string, expiration *int64) string {
	raw := path + ":" + operation + ":" + username + ":" + token
	if expiration != nil {
		raw += ":" + strconv.FormatInt(*expiration, 10)
	}
	sum := sha256.Sum256([]byte(raw))
	return "v1_" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// SignatureValid reports whether r is a GET, HEAD or POST of /files whose
// `signature` (and optional `signature_expiration`) query parameters are a
// valid, unexpired signature made with the access token in force. The token
// middleware should let such requests through without X-Access-Token. With
// no token in force it returns false (there is nothing to check against,
// and the middleware lets every request through anyway).
//
// The handlers repeat the full check themselves, E2B's rule included: a
// request that does send X-Access-Token must send the right one, whatever
// its signature says.
func (h *Handler) SignatureValid(r *http.Request) bool {
	if r.URL.Path != "/files" {
		return false
	}
	op, ok := operation(r.Method)
	if !ok {
		return false
	}
	token, has := h.token()
	if !has {
		return false
	}
	return checkSignature(r.URL.Query(), op, token, time.Now()) == nil
}

func operation(method string) (string, bool) {
	switch method {
	case http.MethodGet, http.MethodHead:
		return opRead, true
	case http.MethodPost:
		return opWrite, true
	}
	return "", false
}

func (h *Handler) token() (string, bool) {
	if h.opts.Token == nil {
		return "", false
	}
	return h.opts.Token()
}

// authorize applies E2B's rules for GET/POST /files: with no token in force
// anything goes; a request carrying X-Access-Token must carry the right one;
// any other request needs a valid signature for op. signed reports that the
// signature is what let the request in.
func (h *Handler) authorize(r *http.Request, q url.Values, op string) (signed bool, _ *apiError) {
	token, has := h.token()
	if !has {
		return false, nil
	}
	if hdr := r.Header.Get(accessTokenHeader); hdr != "" {
		if subtle.ConstantTimeCompare([]byte(hdr), []byte(token)) != 1 {
			return false, newError(http.StatusUnauthorized, errTokenHeader, "%v", errTokenHeader)
		}
		return false, nil
	}
	if err := checkSignature(q, op, token, time.Now()); err != nil {
		return false, newError(http.StatusUnauthorized, err, "%v", err)
	}
	return true, nil
}

// requireToken is the check for routes without signed URLs (compose): the
// token middleware already ran, this only keeps the handler safe on its own.
func (h *Handler) requireToken(r *http.Request) *apiError {
	token, has := h.token()
	if !has {
		return nil
	}
	if subtle.ConstantTimeCompare([]byte(r.Header.Get(accessTokenHeader)), []byte(token)) != 1 {
		return newError(http.StatusUnauthorized, nil,
			"unauthorized access, please provide a valid access token")
	}
	return nil
}

func checkSignature(q url.Values, op, token string, now time.Time) error {
	sig := q.Get("signature")
	if sig == "" {
		return errNoSignature
	}
	var exp *int64
	if s := q.Get("signature_expiration"); s != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return errBadExpiry
		}
		exp = &n
	}
	want := Sign(q.Get("path"), op, q.Get("username"), token, exp)
	if subtle.ConstantTimeCompare([]byte(sig), []byte(want)) != 1 {
		return errBadSignature
	}
	if exp != nil && *exp < now.Unix() {
		return errExpired
	}
	return nil
}
