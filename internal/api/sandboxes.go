package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

// SandboxView is a sandbox as the API shows it.
type SandboxView struct {
	ID           string                `json:"id"`
	OwnerID      string                `json:"owner_id"`
	Status       models.SandboxStatus  `json:"status"`
	Template     string                `json:"template"`
	HostID       string                `json:"host_id,omitempty"`
	VCPUs        int                   `json:"vcpus"`
	MemoryMB     int                   `json:"memory_mb"`
	DiskMB       int                   `json:"disk_mb"`
	TimeoutSec   int                   `json:"timeout_sec"`
	Metadata     map[string]string     `json:"metadata"`
	Network      *models.NetworkPolicy `json:"network,omitempty"`
	Error        string                `json:"error,omitempty"`
	CreatedAt    time.Time             `json:"created_at"`
	StartedAt    *time.Time            `json:"started_at,omitempty"`
	PausedAt     *time.Time            `json:"paused_at,omitempty"`
	LastActiveAt *time.Time            `json:"last_active_at,omitempty"`
}

func opt(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func viewOf(sb store.Sandbox) SandboxView {
	md := sb.Metadata
	if md == nil {
		md = map[string]string{}
	}
	return SandboxView{
		ID: sb.ID, OwnerID: sb.OwnerID, Status: sb.Status, Template: sb.Template, HostID: sb.HostID,
		VCPUs: sb.VCPUs, MemoryMB: sb.MemoryMB, DiskMB: sb.DiskMB, TimeoutSec: sb.TimeoutSec,
		Metadata: md, Network: sb.Network, Error: sb.Error, CreatedAt: sb.CreatedAt,
		StartedAt: opt(sb.StartedAt), PausedAt: opt(sb.PausedAt), LastActiveAt: opt(sb.LastActiveAt),
	}
}

// CreateRequest is the body of POST /v1/sandboxes.
type CreateRequest struct {
	Template string `json:"template"`
	VCPUs    int    `json:"vcpus"`
	MemoryMB int    `json:"memory_mb"`
	DiskMB   int    `json:"disk_mb"`
	// TimeoutSec is the idle timeout: absent = defaultTimeoutSec, 0 = never.
	TimeoutSec *int                  `json:"timeout_sec"`
	Metadata   map[string]string     `json:"metadata"`
	Envs       map[string]string     `json:"envs"`
	Network    *models.NetworkPolicy `json:"network"` // nil = allow all
}

// Seconds returns a *int for CreateRequest.TimeoutSec.
func Seconds(n int) *int { return &n }

var (
	templateRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	envKeyRe   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
)

const (
	maxMapEntries = 64
	maxMetaKey    = 64
	maxMetaValue  = 1024
	maxEnvValue   = 8192
	maxTimeoutSec = 86400

	defaultTimeoutSec = 300
)

// normalize fills defaults and validates.
func (c *CreateRequest) normalize(defTemplate string) error {
	if c.Template == "" {
		c.Template = defTemplate
	}
	if c.VCPUs == 0 {
		c.VCPUs = 1
	}
	if c.MemoryMB == 0 {
		c.MemoryMB = 512
	}
	if c.TimeoutSec == nil {
		c.TimeoutSec = Seconds(defaultTimeoutSec)
	}
	if !templateRe.MatchString(c.Template) {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "template %q: want lower-case letters, digits, '.', '_' or '-'", c.Template)
	}
	if t := *c.TimeoutSec; t < 0 || t > maxTimeoutSec {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "timeout_sec %d: want 0 (never) to %d", t, maxTimeoutSec)
	}
	if c.Network != nil {
		if err := c.Network.Validate(); err != nil {
			return err
		}
	}
	if err := (models.Resources{VCPUs: c.VCPUs, MemoryMB: c.MemoryMB, DiskMB: c.DiskMB}).Validate(); err != nil {
		return err
	}
	if err := checkMetadata(c.Metadata); err != nil {
		return err
	}
	return checkMap("envs", c.Envs, envKeyRe.MatchString, maxEnvValue)
}

func checkMetadata(m map[string]string) error {
	return checkMap("metadata", m, func(k string) bool { return k != "" && len(k) <= maxMetaKey }, maxMetaValue)
}

func checkMap(field string, m map[string]string, keyOK func(string) bool, maxVal int) error {
	if len(m) > maxMapEntries {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "%s: at most %d entries", field, maxMapEntries)
	}
	for k, v := range m {
		if !keyOK(k) || strings.ContainsRune(k, 0) {
			return errdefs.Errorf(errdefs.ErrInvalidArgument, "%s: invalid key %q", field, k)
		}
		if len(v) > maxVal || strings.ContainsRune(v, 0) {
			return errdefs.Errorf(errdefs.ErrInvalidArgument, "%s[%s]: value too long or has NUL", field, k)
		}
	}
	return nil
}

func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request) {
	var req CreateRequest
	if err := s.decodeJSON(w, r, &req, true); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := req.normalize(s.cfg.DefaultTemplate); err != nil {
		s.writeError(w, r, err)
		return
	}
	sb, err := s.create(r.Context(), apiKeyFrom(r.Context()), req)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, viewOf(sb))
}

// create reserves the pool, schedules, boots on the agent and marks the
// sandbox running. Once the reservation exists every failure ends in the
// error state (which releases the reservation); the agent work runs
// detached from the request, so a client that hangs up cannot leave a
// half-made sandbox behind.
func (s *Server) create(rctx context.Context, k store.APIKey, req CreateRequest) (store.Sandbox, error) {
	need := models.Resources{VCPUs: req.VCPUs, MemoryMB: req.MemoryMB, DiskMB: req.DiskMB}
	sb, err := s.st.CreateSandbox(rctx, store.NewSandbox{
		ID: id.NewSandboxID(), OwnerID: k.OwnerID, APIKeyID: k.ID, Template: req.Template,
		Resources: need, TimeoutSec: *req.TimeoutSec, Metadata: req.Metadata, Network: req.Network,
	})
	if err != nil {
		return store.Sandbox{}, err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(rctx), s.cfg.CreateTimeout)
	defer cancel()
	log := s.log.With("sandbox_id", sb.ID, "owner_id", k.OwnerID)
	fail := func(cause error, agent Agent) error {
		if agent != nil {
			if err := agent.DestroySandbox(ctx, sb.ID); err != nil && !errdefs.IsNotFound(err) {
				log.Warn("destroy after failed create", "err", err)
			}
		}
		if _, err := s.st.MarkError(ctx, sb.ID, truncate(cause.Error(), 500)); err != nil {
			log.Error("mark failed create as error", "err", err)
		}
		return cause
	}
	host, err := s.sched.Pick(ctx, need)
	if err != nil {
		return store.Sandbox{}, fail(err, nil)
	}
	agent, err := s.agents.Agent(host.ID)
	if err != nil {
		return store.Sandbox{}, fail(err, nil)
	}
	if _, err := s.st.Transition(ctx, store.Transition{ID: sb.ID, From: []models.SandboxStatus{models.StatusPending},
		To: models.StatusStarting, Set: store.SandboxPatch{HostID: &host.ID}}); err != nil {
		return store.Sandbox{}, fail(err, nil)
	}
	resp, err := agent.CreateSandbox(ctx, &pb.CreateSandboxRequest{
		SandboxId: sb.ID, Template: req.Template, Vcpus: int32(req.VCPUs), MemoryMb: int32(req.MemoryMB),
		DiskMb: int32(req.DiskMB), Envs: req.Envs, Metadata: req.Metadata, TimeoutSec: int32(*req.TimeoutSec),
		Network: policyToPB(req.Network),
	})
	if err != nil {
		return store.Sandbox{}, fail(fmt.Errorf("create sandbox on %s: %w", host.ID, err), agent)
	}
	sum := sha256.Sum256([]byte(resp.GetEnvdAccessToken()))
	tokenHash := hex.EncodeToString(sum[:])
	guestIP := resp.GetSandbox().GetGuestIp()
	sb, err = s.st.Transition(ctx, store.Transition{ID: sb.ID, From: []models.SandboxStatus{models.StatusStarting},
		To: models.StatusRunning, Set: store.SandboxPatch{GuestIP: &guestIP, EnvdTokenHash: &tokenHash}})
	if err != nil {
		return store.Sandbox{}, fail(err, agent)
	}
	log.Info("sandbox running", "host_id", host.ID)
	return sb, nil
}

// policyToPB is the agent's form of an egress policy (nil = allow all).
func policyToPB(p *models.NetworkPolicy) *pb.NetworkPolicy {
	if p == nil {
		return nil
	}
	e := pb.NetworkPolicy_EGRESS_ALLOW_ALL
	if p.DenyAll() {
		e = pb.NetworkPolicy_EGRESS_DENY_ALL
	}
	return &pb.NetworkPolicy{Egress: e, AllowCidrs: p.AllowCIDRs, DenyCidrs: p.DenyCIDRs}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func scopeOf(k store.APIKey) store.Scope { return store.Scope{OwnerID: k.OwnerID} }

// lookup returns the caller's sandbox named in the URL. Admin keys see
// only their own sandboxes here too: owner isolation holds for everyone
// on sandbox routes.
func (s *Server) lookup(r *http.Request) (store.Sandbox, error) {
	sid := chi.URLParam(r, "id")
	if err := id.ValidateSandboxID(sid); err != nil {
		return store.Sandbox{}, errdefs.Errorf(errdefs.ErrNotFound, "sandbox %q not found", sid)
	}
	sb, err := s.st.GetSandbox(r.Context(), scopeOf(apiKeyFrom(r.Context())), sid)
	if errdefs.IsNotFound(err) {
		return store.Sandbox{}, errdefs.Errorf(errdefs.ErrNotFound, "sandbox %s not found", sid)
	}
	return sb, err
}

func (s *Server) getSandbox(w http.ResponseWriter, r *http.Request) {
	sb, err := s.lookup(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, viewOf(sb))
}

// UpdateRequest is the body of PATCH /v1/sandboxes/{id}: what may change
// on a live sandbox. Absent fields are kept; metadata replaces the map.
type UpdateRequest struct {
	// TimeoutSec sets the idle timeout (0 = never) and restarts the idle
	// period of a running sandbox.
	TimeoutSec *int              `json:"timeout_sec"`
	Metadata   map[string]string `json:"metadata"`
}

func (s *Server) updateSandbox(w http.ResponseWriter, r *http.Request) {
	var req UpdateRequest
	if err := s.decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if req.TimeoutSec == nil && req.Metadata == nil {
		s.writeError(w, r, errdefs.Errorf(errdefs.ErrInvalidArgument, "nothing to update: give timeout_sec or metadata"))
		return
	}
	if req.TimeoutSec != nil && (*req.TimeoutSec < 0 || *req.TimeoutSec > maxTimeoutSec) {
		s.writeError(w, r, errdefs.Errorf(errdefs.ErrInvalidArgument, "timeout_sec %d: want 0 (never) to %d", *req.TimeoutSec, maxTimeoutSec))
		return
	}
	if err := checkMetadata(req.Metadata); err != nil {
		s.writeError(w, r, err)
		return
	}
	sb, err := s.lookup(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	sb, err = s.st.UpdateSandbox(r.Context(), scopeOf(apiKeyFrom(r.Context())), sb.ID,
		store.SandboxUpdate{TimeoutSec: req.TimeoutSec, Metadata: req.Metadata})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, viewOf(sb))
}

// ListResponse is one page of GET /v1/sandboxes.
type ListResponse struct {
	Sandboxes     []SandboxView `json:"sandboxes"`
	NextPageToken string        `json:"next_page_token,omitempty"`
}

func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	o := store.ListOptions{Template: q.Get("template"), PageToken: q.Get("page_token")}
	for _, v := range q["status"] {
		for _, st := range strings.Split(v, ",") {
			ss := models.SandboxStatus(st)
			if !ss.Valid() {
				s.writeError(w, r, errdefs.Errorf(errdefs.ErrInvalidArgument, "status %q: unknown", st))
				return
			}
			o.Statuses = append(o.Statuses, ss)
		}
	}
	for _, v := range q["metadata"] {
		kk, vv, ok := strings.Cut(v, "=")
		if !ok || kk == "" {
			s.writeError(w, r, errdefs.Errorf(errdefs.ErrInvalidArgument, "metadata filter %q: want key=value", v))
			return
		}
		if o.Metadata == nil {
			o.Metadata = map[string]string{}
		}
		o.Metadata[kk] = vv
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxPageSize {
			s.writeError(w, r, errdefs.Errorf(errdefs.ErrInvalidArgument, "limit %q: want 1-%d", v, store.MaxPageSize))
			return
		}
		o.Limit = n
	}
	page, err := s.st.ListSandboxes(r.Context(), scopeOf(apiKeyFrom(r.Context())), o)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := ListResponse{Sandboxes: make([]SandboxView, 0, len(page.Sandboxes)), NextPageToken: page.NextPageToken}
	for _, sb := range page.Sandboxes {
		out.Sandboxes = append(out.Sandboxes, viewOf(sb))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteSandbox(w http.ResponseWriter, r *http.Request) {
	sb, err := s.lookup(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if sb.Status == models.StatusStopped {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	ctx := context.WithoutCancel(r.Context())
	if sb.HostID != "" {
		err := s.withAgent(sb, func(a Agent) error { return a.DestroySandbox(ctx, sb.ID) })
		if err != nil && !errdefs.IsNotFound(err) {
			if sb.Status != models.StatusError {
				s.writeError(w, r, err)
				return
			}
			// An errored sandbox whose host is gone: nothing left to ask.
			s.log.Warn("destroy errored sandbox", "sandbox_id", sb.ID, "err", err)
		}
	}
	if _, err := s.st.MarkStopped(ctx, scopeOf(apiKeyFrom(r.Context())), sb.ID); err != nil && !errdefs.IsConflict(err) {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) withAgent(sb store.Sandbox, fn func(Agent) error) error {
	if sb.HostID == "" {
		return errdefs.Errorf(errdefs.ErrConflict, "sandbox %s is not on a host", sb.ID)
	}
	a, err := s.agents.Agent(sb.HostID)
	if err != nil {
		return err
	}
	return fn(a)
}

func (s *Server) pauseSandbox(w http.ResponseWriter, r *http.Request) {
	s.move(w, r, "pause", []models.SandboxStatus{models.StatusRunning}, models.StatusPaused,
		func(ctx context.Context, a Agent, id string) (store.SandboxPatch, error) {
			return store.SandboxPatch{}, a.PauseSandbox(ctx, id)
		})
}

// resumeSandbox continues a paused sandbox, or wakes a hibernated one from
// its snapshot.
func (s *Server) resumeSandbox(w http.ResponseWriter, r *http.Request) {
	s.move(w, r, "resume", []models.SandboxStatus{models.StatusPaused, models.StatusHibernated}, models.StatusRunning,
		func(ctx context.Context, a Agent, id string) (store.SandboxPatch, error) {
			return store.SandboxPatch{}, a.ResumeSandbox(ctx, id)
		})
}

// hibernateSandbox saves a running or paused sandbox to its host's
// snapshot store and stops its VM, freeing the host's vCPUs and memory
// (the owner's pool stays reserved, so a resume cannot be refused for
// quota).
func (s *Server) hibernateSandbox(w http.ResponseWriter, r *http.Request) {
	s.move(w, r, "hibernate", []models.SandboxStatus{models.StatusRunning, models.StatusPaused}, models.StatusHibernated,
		func(ctx context.Context, a Agent, id string) (store.SandboxPatch, error) {
			loc, err := a.HibernateSandbox(ctx, id)
			return store.SandboxPatch{HibernateLocation: &loc}, err
		})
}

// move takes the sandbox's operation lease if it is in one of from (a
// sandbox in another status, or busy with another operation, is a
// conflict), asks the agent, and records the move to to, which ends the
// lease; a failed agent call ends it without a move.
func (s *Server) move(w http.ResponseWriter, r *http.Request, op string, from []models.SandboxStatus, to models.SandboxStatus,
	call func(context.Context, Agent, string) (store.SandboxPatch, error)) {
	sb, err := s.lookup(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ctx := context.WithoutCancel(r.Context())
	sb, err = s.st.BeginOp(ctx, store.Op{ID: sb.ID, OwnerID: sb.OwnerID, From: from, To: to, Name: op})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var set store.SandboxPatch
	// The agent call ends before the lease could expire under it.
	actx, cancel := context.WithTimeout(ctx, store.DefaultOpTTL-time.Minute)
	defer cancel()
	if err := s.withAgent(sb, func(a Agent) error {
		var err error
		set, err = call(actx, a, sb.ID)
		return err
	}); err != nil {
		if eerr := s.st.EndOp(ctx, sb.ID, op); eerr != nil {
			s.log.Error("end failed "+op, "sandbox_id", sb.ID, "err", eerr)
		}
		s.writeError(w, r, err)
		return
	}
	moved, err := s.st.Transition(ctx, store.Transition{ID: sb.ID, OwnerID: sb.OwnerID,
		From: []models.SandboxStatus{sb.Status}, To: to, Set: set})
	if err != nil {
		// Only a destroy or the reconciler moves a leased sandbox; if the
		// write itself failed, the reconciler repairs the row from the
		// agent's inventory. Either way the lease must not outlive this.
		s.log.Warn("sandbox changed during "+op, "sandbox_id", sb.ID, "err", err)
		if eerr := s.st.EndOp(ctx, sb.ID, op); eerr != nil {
			s.log.Error("end "+op, "sandbox_id", sb.ID, "err", eerr)
		}
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, viewOf(moved))
}
