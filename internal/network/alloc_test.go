package network

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
)

func openTestAllocator(t *testing.T, path, pool string) *Allocator {
	t.Helper()
	a, err := OpenAllocator(path, netip.MustParsePrefix(pool), "wrn")
	if err != nil {
		t.Fatalf("OpenAllocator: %v", err)
	}
	return a
}

func TestAllocatorBlocks(t *testing.T) {
	a := openTestAllocator(t, filepath.Join(t.TempDir(), "s.json"), "10.0.0.0/16")
	if a.Capacity() != 16384 {
		t.Fatalf("capacity %d, want 16384", a.Capacity())
	}
	tests := []struct {
		id                   string
		block, host, sandbox string
	}{
		{"a", "10.0.0.0/30", "10.0.0.1", "10.0.0.2"},
		{"b", "10.0.0.4/30", "10.0.0.5", "10.0.0.6"},
		{"c", "10.0.0.8/30", "10.0.0.9", "10.0.0.10"},
	}
	for _, tc := range tests {
		l, existed, err := a.Allocate(tc.id)
		if err != nil || existed {
			t.Fatalf("Allocate(%s): %v existed=%v", tc.id, err, existed)
		}
		if l.Block.String() != tc.block || l.HostIP().String() != tc.host || l.SandboxIP().String() != tc.sandbox {
			t.Errorf("Allocate(%s) = %s host %s sandbox %s, want %s %s %s", tc.id, l.Block, l.HostIP(), l.SandboxIP(), tc.block, tc.host, tc.sandbox)
		}
	}
	again, existed, err := a.Allocate("b")
	if err != nil || !existed || again.Block.String() != "10.0.0.4/30" {
		t.Fatalf("Allocate(b) again = %+v existed=%v err=%v", again, existed, err)
	}
	if _, _, err := a.Allocate(""); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Allocate(\"\"): %v", err)
	}
}

func TestAllocatorPersistence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "s.json")
	a := openTestAllocator(t, path, "10.1.0.0/24")
	for _, id := range []string{"a", "b", "c"} {
		if _, _, err := a.Allocate(id); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.MarkReady("b"); err != nil {
		t.Fatal(err)
	}
	if err := a.Release("a"); err != nil {
		t.Fatal(err)
	}
	if err := a.Release("a"); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if err := a.Release("never"); err != nil {
		t.Fatalf("Release of unknown id: %v", err)
	}

	b := openTestAllocator(t, path, "10.1.0.0/24") // the agent restarted
	got := b.List()
	if len(got) != 2 || got[0].SandboxID != "b" || !got[0].Ready || got[1].SandboxID != "c" || got[1].Ready {
		t.Fatalf("after reopen: %+v", got)
	}
	// Next fit: the freed block 0 is not handed out again right away.
	l, _, err := b.Allocate("d")
	if err != nil {
		t.Fatal(err)
	}
	if l.Index != 3 {
		t.Errorf("after reopen the next block is %d, want 3", l.Index)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("state dir holds %d files, want only the state file", len(ents))
	}
}

func TestAllocatorReopenChecks(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.json")
	a := openTestAllocator(t, path, "10.1.0.0/24")
	if _, _, err := a.Allocate("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenAllocator(path, netip.MustParsePrefix("10.2.0.0/24"), "wrn"); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("new pool with live leases: %v, want ErrConflict", err)
	}
	if _, err := OpenAllocator(path, netip.MustParsePrefix("10.1.0.0/24"), "other"); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("new label with live leases: %v, want ErrConflict", err)
	}
	if err := a.Release("a"); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenAllocator(path, netip.MustParsePrefix("10.2.0.0/24"), "wrn"); err != nil {
		t.Errorf("new pool without leases: %v", err)
	}
	bad := filepath.Join(dir, "bad.json")
	for name, content := range map[string]string{
		"not json":        "{",
		"wrong version":   `{"version":9}`,
		"block mismatch":  `{"version":1,"pool":"10.1.0.0/24","label":"wrn","leases":[{"sandbox_id":"x","index":1,"block":"10.1.0.0/30"}]}`,
		"index too large": `{"version":1,"pool":"10.1.0.0/24","label":"wrn","leases":[{"sandbox_id":"x","index":64,"block":"10.1.1.0/30"}]}`,
		"block twice":     `{"version":1,"pool":"10.1.0.0/24","label":"wrn","leases":[{"sandbox_id":"x","index":0,"block":"10.1.0.0/30"},{"sandbox_id":"y","index":0,"block":"10.1.0.0/30"}]}`,
	} {
		if err := os.WriteFile(bad, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := OpenAllocator(bad, netip.MustParsePrefix("10.1.0.0/24"), "wrn"); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
	for _, pool := range []string{"10.0.0.0/31", "::/64", "10.0.0.0/7"} {
		if _, err := OpenAllocator(filepath.Join(dir, "p.json"), netip.MustParsePrefix(pool), "wrn"); err == nil {
			t.Errorf("pool %s accepted", pool)
		}
	}
}

func TestAllocatorExhaustion(t *testing.T) {
	a := openTestAllocator(t, filepath.Join(t.TempDir(), "s.json"), "10.0.0.0/29")
	for _, id := range []string{"a", "b"} {
		if _, _, err := a.Allocate(id); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := a.Allocate("c")
	var ex *ExhaustedError
	if !errors.As(err, &ex) || !errors.Is(err, errdefs.ErrResourceExhausted) || ex.Blocks != 2 {
		t.Fatalf("Allocate on a full pool: %v", err)
	}
	if err := a.Release("a"); err != nil {
		t.Fatal(err)
	}
	if l, _, err := a.Allocate("c"); err != nil || l.Index != 0 {
		t.Fatalf("Allocate after release: %+v %v", l, err)
	}
}

func TestAllocatorConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.json")
	a := openTestAllocator(t, path, "10.0.0.0/24") // 64 blocks
	const n = 100
	var wg sync.WaitGroup
	leases := make([]Lease, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { leases[i], _, errs[i] = a.Allocate(fmt.Sprintf("s%03d", i)) })
	}
	wg.Wait()
	blocks := map[netip.Prefix]string{}
	var exhausted int
	for i := range n {
		if errs[i] != nil {
			if !errors.Is(errs[i], errdefs.ErrResourceExhausted) {
				t.Fatalf("Allocate %d: %v", i, errs[i])
			}
			exhausted++
			continue
		}
		if other, dup := blocks[leases[i].Block]; dup {
			t.Fatalf("block %s given to %s and %s", leases[i].Block, other, leases[i].SandboxID)
		}
		blocks[leases[i].Block] = leases[i].SandboxID
	}
	if len(blocks) != 64 || exhausted != n-64 {
		t.Fatalf("%d allocated, %d exhausted; want 64 and %d", len(blocks), exhausted, n-64)
	}
	for i := range n {
		wg.Go(func() { errs[i] = a.Release(fmt.Sprintf("s%03d", i)) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if got := openTestAllocator(t, path, "10.0.0.0/24").List(); len(got) != 0 {
		t.Fatalf("after releasing all and reopening: %d leases", len(got))
	}
}
