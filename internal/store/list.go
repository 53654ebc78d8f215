package store

import (
	"context"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
)

// Page size bounds for ListSandboxes.
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
)

// ListOptions filter and page ListSandboxes.
type ListOptions struct {
	Statuses []models.SandboxStatus // any of these; empty = all
	Template string                 // exact; "" = all
	// Metadata must be contained in the sandbox's metadata (every key with
	// the same value).
	Metadata map[string]string
	// OwnerID narrows an admin scope to one owner (ignored otherwise).
	OwnerID string
	HostID  string // "" = all
	// Limit is the page size: 0 = DefaultPageSize, at most MaxPageSize.
	Limit int
	// PageToken is the previous page's NextPageToken ("" = first page).
	PageToken string
	// WithTotal also counts every row matching the filters.
	WithTotal bool
}

// Page is one page of sandboxes, newest first.
type Page struct {
	Sandboxes []Sandbox
	// NextPageToken is "" on the last page.
	NextPageToken string
	// Total is the number of matching rows, or -1 when not asked for.
	Total int
}

// ListSandboxes returns the sandboxes scope may see, newest first
// (created_at, then id, descending), one page at a time. Paging is by
// keyset: the token names the last row returned, so rows created while a
// client pages never shift the pages it has not read yet, and no row is
// returned twice or skipped.
func (s *Store) ListSandboxes(ctx context.Context, sc Scope, o ListOptions) (Page, error) {
	limit := o.Limit
	switch {
	case limit < 0:
		return Page{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "list sandboxes: negative limit")
	case limit == 0:
		limit = DefaultPageSize
	case limit > MaxPageSize:
		limit = MaxPageSize
	}
	var q query
	switch {
	case !sc.Admin:
		if sc.OwnerID == "" {
			return Page{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "list sandboxes: scope without owner")
		}
		q.where("owner_id = %s", sc.OwnerID)
	case o.OwnerID != "":
		q.where("owner_id = %s", o.OwnerID)
	}
	if len(o.Statuses) > 0 {
		for _, st := range o.Statuses {
			if !st.Valid() {
				return Page{}, errdefs.Errorf(errdefs.ErrInvalidArgument, "list sandboxes: unknown status %q", st)
			}
		}
		if len(o.Statuses) == 1 {
			q.where("status = %s", string(o.Statuses[0]))
		} else {
			q.where("status = ANY(%s)", statusStrings(o.Statuses))
		}
	}
	if o.Template != "" {
		q.where("template = %s", o.Template)
	}
	if len(o.Metadata) > 0 {
		q.where("metadata @> %s", o.Metadata)
	}
	if o.HostID != "" {
		q.where("host_id = %s", o.HostID)
	}

	page := Page{Total: -1}
	if o.WithTotal {
		if err := s.pool.QueryRow(ctx, "SELECT count(*) FROM sandboxes"+q.sql(), q.args...).Scan(&page.Total); err != nil {
			return Page{}, dbErr("count sandboxes", err)
		}
	}
	if o.PageToken != "" {
		at, id, err := decodePageToken(o.PageToken)
		if err != nil {
			return Page{}, err
		}
		q.where2("(created_at, id) < (%s, %s)", at, id)
	}
	sql := "SELECT " + sandboxCols + " FROM sandboxes" + q.sql() +
		" ORDER BY created_at DESC, id DESC LIMIT " + strconv.Itoa(limit+1)
	rows, err := s.pool.Query(ctx, sql, q.args...)
	if err != nil {
		return Page{}, dbErr("list sandboxes", err)
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Sandbox, error) { return scanSandbox(r) })
	if err != nil {
		return Page{}, dbErr("list sandboxes", err)
	}
	if len(items) > limit {
		items = items[:limit]
		last := items[limit-1]
		page.NextPageToken = encodePageToken(last.CreatedAt, last.ID)
	}
	page.Sandboxes = items
	return page, nil
}

// query accumulates AND-ed conditions with numbered placeholders.
type query struct {
	conds []string
	args  []any
}

func (q *query) where(format string, arg any) {
	q.args = append(q.args, arg)
	q.conds = append(q.conds, fmt.Sprintf(format, "$"+strconv.Itoa(len(q.args))))
}

func (q *query) where2(format string, a, b any) {
	q.args = append(q.args, a, b)
	n := len(q.args)
	q.conds = append(q.conds, fmt.Sprintf(format, "$"+strconv.Itoa(n-1), "$"+strconv.Itoa(n)))
}

func (q *query) sql() string {
	if len(q.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(q.conds, " AND ")
}

// Page tokens are opaque to clients: base64url("v1:<unix micros>:<id>").
// PostgreSQL keeps microseconds, so the cursor is exact.
func encodePageToken(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("v1:" + strconv.FormatInt(at.UnixMicro(), 10) + ":" + id))
}

func decodePageToken(tok string) (time.Time, string, error) {
	bad := errdefs.Errorf(errdefs.ErrInvalidArgument, "invalid page token")
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return time.Time{}, "", bad
	}
	parts := strings.SplitN(string(raw), ":", 3)
	if len(parts) != 3 || parts[0] != "v1" || parts[2] == "" {
		return time.Time{}, "", bad
	}
	us, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return time.Time{}, "", bad
	}
	return time.UnixMicro(us), parts[2], nil
}
