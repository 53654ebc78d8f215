package api

import (
	"context"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/wrenn-dev/wrenn-sandbox/internal/auth"
	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

func (s *Server) listHosts(w http.ResponseWriter, r *http.Request) {
	hosts, err := s.st.ListHosts(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if hosts == nil {
		hosts = []store.Host{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"hosts": hosts})
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	keys, err := s.st.ListAPIKeys(r.Context(), store.AdminScope)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if keys == nil {
		keys = []store.APIKey{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
}

// CreateKeyRequest is the body of POST /v1/keys.
type CreateKeyRequest struct {
	OwnerID         string      `json:"owner_id"`
	Name            string      `json:"name"`
	Admin           bool        `json:"admin"`
	Plan            string      `json:"plan"`
	Pool            *store.Pool `json:"pool"`
	RateLimitPerSec float64     `json:"rate_limit_per_sec"`
	RateLimitBurst  int         `json:"rate_limit_burst"`
}

// CreatedKey is the response of POST /v1/keys: the only time the key
// itself is ever shown.
type CreatedKey struct {
	Key string `json:"key"`
	store.APIKey
}

// NewKey generates and stores a key (shared by POST /v1/keys and the
// `keys create` command).
func NewKey(ctx context.Context, st *store.Store, req CreateKeyRequest) (CreatedKey, error) {
	if req.OwnerID == "" || len(req.OwnerID) > 128 || strings.ContainsRune(req.OwnerID, 0) {
		return CreatedKey{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "owner_id is required (at most 128 bytes)")
	}
	if len(req.Name) > 128 || strings.ContainsRune(req.Name, 0) {
		return CreatedKey{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "name: at most 128 bytes")
	}
	if p := req.Pool; p != nil && (p.VCPUs < 0 || p.MemoryMB < 0 || p.StorageMB < 0) {
		return CreatedKey{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "pool: negative amounts")
	}
	if req.RateLimitPerSec < 0 || req.RateLimitBurst < 0 {
		return CreatedKey{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "rate limits must not be negative")
	}
	nk, err := auth.GenerateKey()
	if err != nil {
		return CreatedKey{}, err
	}
	k, err := st.CreateAPIKey(ctx, store.NewAPIKey{
		KeyHash: nk.Hash, KeyPrefix: nk.DisplayPrefix, Name: req.Name, OwnerID: req.OwnerID, IsAdmin: req.Admin,
		Plan: req.Plan, Pool: req.Pool, RateLimitPerSec: req.RateLimitPerSec, RateLimitBurst: req.RateLimitBurst,
	})
	if err != nil {
		return CreatedKey{}, err
	}
	return CreatedKey{Key: nk.Plaintext, APIKey: k}, nil
}

func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	var req CreateKeyRequest
	if err := s.decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	k, err := NewKey(r.Context(), s.st, req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, k)
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request) {
	k, err := s.st.RevokeAPIKey(r.Context(), store.AdminScope, chi.URLParam(r, "id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, k)
}
