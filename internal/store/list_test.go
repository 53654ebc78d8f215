package store_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
)

var cycle = []models.SandboxStatus{models.StatusPending, models.StatusRunning, models.StatusPaused, models.StatusStopped}

// bulkInsert adds sandboxes ids [from, to) for k in one statement. Every
// third one runs template "python", statuses cycle through `cycle`,
// metadata is {"i": "<n>", "parity": "even"|"odd"}, and three rows share
// each created_at so that the id tie-breaker is exercised.
func bulkInsert(tb testing.TB, pool *pgxpool.Pool, k store.APIKey, from, to int) {
	tb.Helper()
	_, err := pool.Exec(context.Background(), `
		INSERT INTO sandboxes (id, owner_id, api_key_id, template, status, metadata, created_at)
		SELECT 'sb-' || lpad(to_hex(i), 8, '0'), $1, $2,
		       CASE WHEN i % 3 = 0 THEN 'python' ELSE 'minimal' END,
		       (ARRAY['pending', 'running', 'paused', 'stopped'])[1 + i % 4],
		       jsonb_build_object('i', i::text, 'parity', CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END),
		       timestamptz '2026-01-01 00:00:00Z' + (i / 3) * interval '1 millisecond'
		  FROM generate_series($3::int, $4::int - 1) i`, k.OwnerID, k.ID, from, to)
	if err != nil {
		tb.Fatal(err)
	}
}

func sbID(i int) string { return fmt.Sprintf("sb-%08x", i) }

// pageAll lists everything with o, page by page.
func pageAll(t *testing.T, s *store.Store, sc store.Scope, o store.ListOptions) (ids []string, pages int) {
	t.Helper()
	for {
		p, err := s.ListSandboxes(context.Background(), sc, o)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, sb := range p.Sandboxes {
			ids = append(ids, sb.ID)
		}
		if p.NextPageToken == "" {
			return ids, pages
		}
		if len(p.Sandboxes) == 0 {
			t.Fatal("empty page with a next token")
		}
		o.PageToken = p.NextPageToken
		if pages > 10000 {
			t.Fatal("paging does not end")
		}
	}
}

func TestListPagination(t *testing.T) {
	ctx := context.Background()
	s, d := newStore(t)
	alice := mkKey(t, s, "alice", bigPool)
	bob := mkKey(t, s, "bob", bigPool)
	bulkInsert(t, d.Pool, alice, 0, 1000)
	bulkInsert(t, d.Pool, bob, 1000, 1300)

	// Expected order: created_at DESC, then id DESC; i/3 is the time.
	var want []string
	for i := 999; i >= 0; i-- {
		want = append(want, sbID(i))
	}
	// Within a timestamp, ids descend: i = 3t+2, 3t+1, 3t — which is just
	// descending i here, since ids grow with i.
	for _, size := range []int{1, 7, 50, 333, 1000, 5000} {
		t.Run(fmt.Sprint("page size ", size), func(t *testing.T) {
			got, pages := pageAll(t, s, alice.Scope(), store.ListOptions{Limit: size})
			if !slices.Equal(got, want) {
				t.Fatalf("order/coverage differs: got %d ids (first %v), want %d", len(got), got[:min(5, len(got))], len(want))
			}
			wantPages := (1000 + min(size, store.MaxPageSize) - 1) / min(size, store.MaxPageSize)
			if pages != wantPages {
				t.Errorf("pages = %d, want %d", pages, wantPages)
			}
		})
	}

	t.Run("rows added while paging do not shift pages", func(t *testing.T) {
		o := store.ListOptions{Limit: 100}
		var got []string
		for i := 0; ; i++ {
			p, err := s.ListSandboxes(ctx, alice.Scope(), o)
			if err != nil {
				t.Fatal(err)
			}
			for _, sb := range p.Sandboxes {
				got = append(got, sb.ID)
			}
			if i == 2 {
				mkSandbox(t, s, alice, nil) // newest: before the cursor
			}
			if p.NextPageToken == "" {
				break
			}
			o.PageToken = p.NextPageToken
		}
		if !slices.Equal(got, want) {
			t.Errorf("got %d ids, want the 1000 that existed", len(got))
		}
	})

	t.Run("time descends, ties broken by id descending", func(t *testing.T) {
		carol := mkKey(t, s, "carol", bigPool)
		bulkInsert(t, d.Pool, carol, 2000, 2400)
		// Reverse time against id: low ids are newest, in groups of 5.
		if _, err := d.Pool.Exec(ctx, `UPDATE sandboxes
			SET created_at = timestamptz '2026-02-01 00:00:00Z' + ((2400 - ('x' || substr(id, 4))::bit(32)::int) / 5) * interval '1 microsecond'
			WHERE owner_id = 'carol'`); err != nil {
			t.Fatal(err)
		}
		type row struct {
			at int
			id string
		}
		var rows []row
		for i := 2000; i < 2400; i++ {
			rows = append(rows, row{(2400 - i) / 5, sbID(i)})
		}
		slices.SortFunc(rows, func(a, b row) int {
			if a.at != b.at {
				return b.at - a.at
			}
			return strings.Compare(b.id, a.id)
		})
		var want []string
		for _, r := range rows {
			want = append(want, r.id)
		}
		for _, size := range []int{1, 3, 5, 64} {
			got, _ := pageAll(t, s, carol.Scope(), store.ListOptions{Limit: size})
			if !slices.Equal(got, want) {
				t.Fatalf("size %d: got %v..., want %v...", size, got[:8], want[:8])
			}
		}
	})

	t.Run("admin sees all owners", func(t *testing.T) {
		got, _ := pageAll(t, s, store.AdminScope, store.ListOptions{OwnerID: "alice", Limit: 250})
		if len(got) != 1001 || hasDup(got) {
			t.Errorf("admin got %d of alice's ids, want 1001", len(got))
		}
		got, _ = pageAll(t, s, store.AdminScope, store.ListOptions{Limit: 250})
		if len(got) != 1701 || hasDup(got) {
			t.Errorf("admin got %d ids (dups %v), want 1301", len(got), hasDup(got))
		}
		got, _ = pageAll(t, s, store.AdminScope, store.ListOptions{OwnerID: "bob", Limit: 250})
		if len(got) != 300 {
			t.Errorf("admin filtered to bob: %d", len(got))
		}
		got, _ = pageAll(t, s, bob.Scope(), store.ListOptions{OwnerID: "alice"})
		if len(got) != 300 {
			t.Errorf("bob asking for alice's rows got %d rows, want his own 300", len(got))
		}
	})

	t.Run("invalid requests", func(t *testing.T) {
		for _, tok := range []string{"!!!", "djE6eDpzYi0x", "eHh4", "djE6MTIz"} {
			if _, err := s.ListSandboxes(ctx, alice.Scope(), store.ListOptions{PageToken: tok}); !errdefs.IsInvalidArgument(err) {
				t.Errorf("token %q: err = %v", tok, err)
			}
		}
		if _, err := s.ListSandboxes(ctx, alice.Scope(), store.ListOptions{Limit: -1}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("negative limit: %v", err)
		}
		if _, err := s.ListSandboxes(ctx, store.Scope{}, store.ListOptions{}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("scope without owner: %v", err)
		}
		if _, err := s.ListSandboxes(ctx, alice.Scope(), store.ListOptions{Statuses: []models.SandboxStatus{"bogus"}}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("bad status: %v", err)
		}
	})

	t.Run("default page size", func(t *testing.T) {
		p, err := s.ListSandboxes(ctx, alice.Scope(), store.ListOptions{})
		if err != nil || len(p.Sandboxes) != store.DefaultPageSize || p.NextPageToken == "" || p.Total != -1 {
			t.Errorf("got %d rows, token %q, total %d, %v", len(p.Sandboxes), p.NextPageToken, p.Total, err)
		}
	})
}

func hasDup(ids []string) bool {
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			return true
		}
		seen[id] = true
	}
	return false
}

func TestListFilters(t *testing.T) {
	ctx := context.Background()
	s, d := newStore(t)
	alice := mkKey(t, s, "alice", bigPool)
	bob := mkKey(t, s, "bob", bigPool)
	bulkInsert(t, d.Pool, alice, 0, 120)
	bulkInsert(t, d.Pool, bob, 1000, 1012)
	if _, err := s.UpsertHost(ctx, store.HostRegistration{ID: "h1", GRPCEndpoint: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Pool.Exec(ctx, `UPDATE sandboxes SET host_id = 'h1' WHERE id IN ($1, $2)`, sbID(5), sbID(6)); err != nil {
		t.Fatal(err)
	}

	// expect computes the answer from the generator's rules.
	expect := func(lo, hi int, keep func(i int) bool) []string {
		var out []string
		for i := hi - 1; i >= lo; i-- {
			if keep(i) {
				out = append(out, sbID(i))
			}
		}
		return out
	}
	tests := []struct {
		name  string
		scope store.Scope
		o     store.ListOptions
		want  []string
	}{
		{"all of alice", alice.Scope(), store.ListOptions{}, expect(0, 120, func(int) bool { return true })},
		{"running", alice.Scope(), store.ListOptions{Statuses: []models.SandboxStatus{models.StatusRunning}},
			expect(0, 120, func(i int) bool { return i%4 == 1 })},
		{"running or paused", alice.Scope(), store.ListOptions{Statuses: []models.SandboxStatus{models.StatusRunning, models.StatusPaused}},
			expect(0, 120, func(i int) bool { return i%4 == 1 || i%4 == 2 })},
		{"template", alice.Scope(), store.ListOptions{Template: "python"},
			expect(0, 120, func(i int) bool { return i%3 == 0 })},
		{"metadata one key", alice.Scope(), store.ListOptions{Metadata: map[string]string{"parity": "odd"}},
			expect(0, 120, func(i int) bool { return i%2 == 1 })},
		{"metadata two keys", alice.Scope(), store.ListOptions{Metadata: map[string]string{"parity": "odd", "i": "7"}},
			[]string{sbID(7)}},
		{"metadata no match", alice.Scope(), store.ListOptions{Metadata: map[string]string{"parity": "even", "i": "7"}}, nil},
		{"everything at once", alice.Scope(), store.ListOptions{Statuses: []models.SandboxStatus{models.StatusRunning},
			Template: "python", Metadata: map[string]string{"parity": "odd"}},
			expect(0, 120, func(i int) bool { return i%4 == 1 && i%3 == 0 && i%2 == 1 })},
		{"host", store.AdminScope, store.ListOptions{HostID: "h1"}, []string{sbID(6), sbID(5)}},
		{"bob cannot see alice's metadata match", bob.Scope(), store.ListOptions{Metadata: map[string]string{"i": "7"}}, nil},
		{"admin filter by owner and template", store.AdminScope, store.ListOptions{OwnerID: "bob", Template: "python"},
			expect(1000, 1012, func(i int) bool { return i%3 == 0 })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.o.Limit = 7
			tt.o.WithTotal = true
			p, err := s.ListSandboxes(ctx, tt.scope, tt.o)
			if err != nil {
				t.Fatal(err)
			}
			if p.Total != len(tt.want) {
				t.Errorf("total = %d, want %d", p.Total, len(tt.want))
			}
			tt.o.WithTotal = false
			got, _ := pageAll(t, s, tt.scope, tt.o)
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestSandboxesOnHostAndCounts(t *testing.T) {
	ctx := context.Background()
	s, _ := newStore(t)
	k := mkKey(t, s, "alice", bigPool)
	if _, err := s.UpsertHost(ctx, store.HostRegistration{ID: "h1", GRPCEndpoint: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	onHost := func(n *store.NewSandbox) { n.HostID = "h1" }
	a := mkSandbox(t, s, k, onHost)
	b := mkSandbox(t, s, k, onHost)
	c := mkSandbox(t, s, k, onHost)
	mkSandbox(t, s, k, nil)
	if _, err := s.MarkStopped(ctx, store.AdminScope, c.ID); err != nil {
		t.Fatal(err)
	}
	got, err := s.SandboxesOnHost(ctx, "h1")
	if err != nil || len(got) != 2 || got[0].ID != a.ID || got[1].ID != b.ID {
		t.Errorf("on host: %v, %v", got, err)
	}
	counts, err := s.CountSandboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[models.SandboxStatus]int{models.StatusPending: 3, models.StatusStopped: 1}
	for _, st := range models.AllStatuses {
		if counts[st] != want[st] {
			t.Errorf("count[%s] = %d, want %d", st, counts[st], want[st])
		}
	}
	// Purge: only stopped rows older than the cutoff.
	if n, err := s.PurgeStopped(ctx, time.Hour); err != nil || n != 0 {
		t.Errorf("purge with 1h cutoff: %d, %v", n, err)
	}
	if n, err := s.PurgeStopped(ctx, 0); err != nil || n != 1 {
		t.Errorf("purge: %d, %v", n, err)
	}
	if _, err := s.GetSandbox(ctx, store.AdminScope, c.ID); !errdefs.IsNotFound(err) {
		t.Errorf("purged row still there: %v", err)
	}
}

// BenchmarkListSandboxes measures one page query (50 rows) against 10,000
// sandboxes of one owner, for the first page, a deep page, and filters.
func BenchmarkListSandboxes(b *testing.B) {
	ctx := context.Background()
	s, d := newStore(b)
	k := mkKey(b, s, "alice", bigPool)
	other := mkKey(b, s, "bob", bigPool)
	bulkInsert(b, d.Pool, k, 0, 10000)
	bulkInsert(b, d.Pool, other, 10000, 20000)
	if _, err := d.Pool.Exec(ctx, `VACUUM ANALYZE sandboxes`); err != nil {
		b.Fatal(err)
	}
	deep, err := s.ListSandboxes(ctx, k.Scope(), store.ListOptions{Limit: 5000})
	if err != nil {
		b.Fatal(err)
	}
	cases := []struct {
		name  string
		scope store.Scope
		o     store.ListOptions
	}{
		{"first page", k.Scope(), store.ListOptions{}},
		{"page after 5000 rows", k.Scope(), store.ListOptions{PageToken: deep.NextPageToken}},
		{"status filter", k.Scope(), store.ListOptions{Statuses: []models.SandboxStatus{models.StatusRunning}}},
		{"metadata filter", k.Scope(), store.ListOptions{Metadata: map[string]string{"parity": "odd"}}},
		{"with total", k.Scope(), store.ListOptions{WithTotal: true}},
		{"admin all owners", store.AdminScope, store.ListOptions{}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				p, err := s.ListSandboxes(ctx, c.scope, c.o)
				if err != nil || len(p.Sandboxes) == 0 {
					b.Fatalf("%d rows, %v", len(p.Sandboxes), err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "queries/s")
		})
	}
}
