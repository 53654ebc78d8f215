package store_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/pgtest"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
	"github.com/wrenn-dev/wrenn-sandbox/internal/testlog"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func newDB(t testing.TB) *pgtest.DB { t.Helper(); return pgtest.New(t) }

func newStore(t testing.TB) (*store.Store, *pgtest.DB) {
	t.Helper()
	d := pgtest.New(t)
	log := slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelWarn}))
	return store.New(d.Pool, log), d
}

var keySeq atomic.Int64

func fakeHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// mkKey creates a key for owner with pool p.
func mkKey(t testing.TB, s *store.Store, owner string, p store.Pool) store.APIKey {
	t.Helper()
	n := keySeq.Add(1)
	k, err := s.CreateAPIKey(context.Background(), store.NewAPIKey{
		KeyHash: fakeHash(fmt.Sprint("key", n)), KeyPrefix: "wrn_test", Name: fmt.Sprint("key ", n),
		OwnerID: owner, Pool: &p,
	})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var bigPool = store.Pool{VCPUs: 1 << 20, MemoryMB: 1 << 30, StorageMB: 1 << 30}

func small() models.Resources { return models.Resources{VCPUs: 1, MemoryMB: 128, DiskMB: 0} }

// mkSandbox creates a pending sandbox charged to k.
func mkSandbox(t testing.TB, s *store.Store, k store.APIKey, mut func(*store.NewSandbox)) store.Sandbox {
	t.Helper()
	n := store.NewSandbox{
		ID: id.NewSandboxID(), OwnerID: k.OwnerID, APIKeyID: k.ID, Template: "minimal",
		Resources: small(), TimeoutSec: 300,
	}
	if mut != nil {
		mut(&n)
	}
	sb, err := s.CreateSandbox(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	return sb
}

func ptr[T any](v T) *T { return &v }

// get returns sandbox id as an admin sees it.
func get(t testing.TB, s *store.Store, id string) store.Sandbox {
	t.Helper()
	sb, err := s.GetSandbox(context.Background(), store.AdminScope, id)
	if err != nil {
		t.Fatal(err)
	}
	return sb
}
