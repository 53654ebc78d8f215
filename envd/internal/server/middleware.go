package server

import (
	"encoding/json"
	"net/http"

	"github.com/wrenn-dev/envd/internal/permissions"
)

// Headers browsers may send and read, for SDKs running in a browser.
const (
	corsAllowHeaders  = "*"
	corsExposeHeaders = "Connect-Protocol-Version, Grpc-Status, Grpc-Message, Grpc-Status-Details-Bin, X-Envd-Version, Content-Disposition, Content-Range, Content-Length, Accept-Ranges, Etag, Last-Modified"
)

func cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
			h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
			h.Set("Access-Control-Max-Age", "7200")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// requireToken enforces X-Access-Token once /init has set one. /health and
// /init are open; /files also accepts a valid signed URL instead.
func (s *Server) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/health" && r.Method == http.MethodGet,
			r.URL.Path == "/init" && r.Method == http.MethodPost:
			next.ServeHTTP(w, r)
			return
		case s.state.CheckToken(r.Header.Get("X-Access-Token")):
			next.ServeHTTP(w, r)
			return
		case r.URL.Path == "/files" && r.URL.Query().Get("signature") != "" && s.files.SignatureValid(r):
			next.ServeHTTP(w, r)
			return
		}
		writeError(w, http.StatusUnauthorized, "invalid or missing access token (X-Access-Token)")
	})
}

// resolveUser puts the user the request acts as into its context. A bad
// Authorization header or an unknown user is not refused here: each handler
// refuses in its own protocol (Connect code, HTTP status).
func (s *Server) resolveUser(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/files" || r.URL.Path == "/files/compose" || r.URL.Path == "/health" {
			// The /files routes resolve the user themselves (query override).
			next.ServeHTTP(w, r)
			return
		}
		u, err := permissions.Resolve(r.Header, "", s.state)
		next.ServeHTTP(w, r.WithContext(permissions.WithUser(r.Context(), u, err)))
	})
}

// writeError writes envd's plain-route error body {"message","code"}.
func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Message string `json:"message"`
		Code    int    `json:"code"`
	}{msg, status})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
