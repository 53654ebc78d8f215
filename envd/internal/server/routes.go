package server

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/wrenn-dev/envd/internal/permissions"
	"github.com/wrenn-dev/envd/internal/state"
)

// maxInitBody caps POST /init; real bodies are a few KiB.
const maxInitBody = 1 << 20

func (s *Server) health(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("X-Envd-Version", Version)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) envs(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, s.state.EnvVars())
}

// initRequest is the POST /init body. Field names follow E2B's envd; the
// hostname field is a Wrenn extension used after snapshot restore.
type initRequest struct {
	AccessToken    *string           `json:"accessToken"`
	EnvVars        map[string]string `json:"envVars"`
	DefaultUser    *string           `json:"defaultUser"`
	DefaultWorkdir *string           `json:"defaultWorkdir"`
	Timestamp      *time.Time        `json:"timestamp"`
	Hostname       *string           `json:"hostname"`
	// Entropy (Wrenn extension, base64) is mixed into the guest's random
	// pool, so sandboxes restored from one snapshot stop sharing a stream.
	Entropy []byte `json:"entropy"`
	// Accepted for compatibility; Wrenn does not mount volumes or route
	// through a hyperloop address.
	VolumeMounts json.RawMessage `json:"volumeMounts"`
	HyperloopIP  string          `json:"hyperloopIP"`
	LifecycleID  string          `json:"lifecycleID"`
	CABundle     string          `json:"caBundle"`
}

func (s *Server) init(w http.ResponseWriter, r *http.Request) {
	var req initRequest
	body := http.MaxBytesReader(w, r.Body, maxInitBody)
	if err := json.NewDecoder(body).Decode(&req); err != nil && !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, "init body larger than 1 MiB")
			return
		}
		writeError(w, http.StatusBadRequest, "invalid init body: "+err.Error())
		return
	}
	if req.DefaultUser != nil && *req.DefaultUser != "" {
		if _, err := permissions.Lookup(*req.DefaultUser); err != nil {
			writeError(w, http.StatusBadRequest, "defaultUser: "+err.Error())
			return
		}
	}
	in := state.Init{
		AccessToken:    req.AccessToken,
		EnvVars:        req.EnvVars,
		DefaultUser:    req.DefaultUser,
		DefaultWorkdir: req.DefaultWorkdir,
	}
	if req.Timestamp != nil {
		in.Timestamp = *req.Timestamp
	}
	applied, err := s.state.Apply(in, r.Header.Get("X-Access-Token"))
	if errors.Is(err, state.ErrTokenMismatch) {
		writeError(w, http.StatusUnauthorized, "access token does not match the one already set")
		return
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	if applied {
		s.applyHostSettings(req)
	}
	w.Header().Set("X-Envd-Version", Version)
	w.WriteHeader(http.StatusNoContent)
}

// applyHostSettings sets the clock and hostname where envd owns the machine.
// Failures are logged, not returned: the sandbox is still usable.
func (s *Server) applyHostSettings(req initRequest) {
	if req.Timestamp != nil && s.cfg.SetClock != nil {
		if err := s.cfg.SetClock(*req.Timestamp); err != nil {
			s.log.Warn("set clock from init", "err", err)
		}
	}
	if len(req.Entropy) > 0 && s.cfg.Reseed != nil {
		if err := s.cfg.Reseed(req.Entropy); err != nil {
			s.log.Warn("reseed from init", "err", err)
		}
	}
	if req.Hostname != nil && *req.Hostname != "" && s.cfg.SetHostname != nil {
		if err := s.cfg.SetHostname(*req.Hostname); err != nil {
			s.log.Warn("set hostname from init", "err", err)
		}
	}
}
