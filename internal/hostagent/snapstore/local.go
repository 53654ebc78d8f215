package snapstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
)

// MetaFile is written into a snapshot directory last: a directory without
// it is not a finished snapshot.
const MetaFile = "meta.json"

const stagingDir = ".staging"

// Local keeps snapshots under a root directory: <root>/<snapshot id>/.
type Local struct {
	root string
	// mu makes Put's existence check and rename one step.
	mu sync.Mutex
}

var _ Store = (*Local)(nil)

// NewLocal opens (creating) a local store and removes staging directories
// a crash left behind.
func NewLocal(root string) (*Local, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(abs, stagingDir), 0o700); err != nil {
		return nil, fmt.Errorf("snapshot store %s: %w", abs, err)
	}
	ents, _ := os.ReadDir(filepath.Join(abs, stagingDir))
	for _, e := range ents {
		_ = os.RemoveAll(filepath.Join(abs, stagingDir, e.Name()))
	}
	return &Local{root: abs}, nil
}

// Root is the store's directory.
func (l *Local) Root() string { return l.root }

func (l *Local) dir(snapshotID string) string { return filepath.Join(l.root, snapshotID) }

// Staging implements Store.
func (l *Local) Staging(_ context.Context, snapshotID string) (string, error) {
	if err := id.ValidateSnapshotID(snapshotID); err != nil {
		return "", err
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	dir := filepath.Join(l.root, stagingDir, snapshotID+"-"+hex.EncodeToString(b))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("staging dir: %w", err)
	}
	return dir, nil
}

// Discard implements Store.
func (l *Local) Discard(dir string) error {
	if !strings.HasPrefix(dir, filepath.Join(l.root, stagingDir)+"/") {
		return fmt.Errorf("discard %s: %w: not a staging directory", dir, errdefs.ErrInvalidArgument)
	}
	return os.RemoveAll(dir)
}

// Put implements Store.
func (l *Local) Put(_ context.Context, m Meta, dir string) (Meta, error) {
	if err := id.ValidateSnapshotID(m.SnapshotID); err != nil {
		return m, err
	}
	dst := l.dir(m.SnapshotID)
	m.Location = "local:" + dst
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return m, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := os.Stat(dst); err == nil {
		return m, errdefs.Errorf(errdefs.ErrAlreadyExists, "snapshot %s", m.SnapshotID)
	}
	if err := os.WriteFile(filepath.Join(dir, MetaFile), data, 0o600); err != nil {
		return m, fmt.Errorf("write snapshot meta: %w", err)
	}
	if err := os.Rename(dir, dst); err != nil {
		return m, fmt.Errorf("store snapshot %s: %w", m.SnapshotID, err)
	}
	return m, nil
}

func (l *Local) readMeta(snapshotID string) (Meta, error) {
	var m Meta
	if err := id.ValidateSnapshotID(snapshotID); err != nil {
		return m, err
	}
	data, err := os.ReadFile(filepath.Join(l.dir(snapshotID), MetaFile))
	if errors.Is(err, fs.ErrNotExist) {
		return m, errdefs.Errorf(errdefs.ErrNotFound, "snapshot %s", snapshotID)
	}
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, fmt.Errorf("decode snapshot %s: %w", snapshotID, err)
	}
	m.Location = "local:" + l.dir(snapshotID)
	return m, nil
}

// Get implements Store.
func (l *Local) Get(_ context.Context, snapshotID string) (Meta, error) {
	return l.readMeta(snapshotID)
}

// Open implements Store: a local snapshot is used in place (restores only
// read its memory file and clone its disk).
func (l *Local) Open(_ context.Context, snapshotID string) (string, Meta, func(), error) {
	m, err := l.readMeta(snapshotID)
	if err != nil {
		return "", m, nil, err
	}
	return l.dir(snapshotID), m, func() {}, nil
}

// List implements Store.
func (l *Local) List(context.Context) ([]Meta, error) {
	ents, err := os.ReadDir(l.root)
	if err != nil {
		return nil, err
	}
	var out []Meta
	for _, e := range ents {
		if !e.IsDir() || id.ValidateSnapshotID(e.Name()) != nil {
			continue
		}
		m, err := l.readMeta(e.Name())
		if err != nil {
			continue
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Meta) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// Delete implements Store. The meta file goes first, so a crash halfway
// leaves a directory List ignores; the next Delete finishes it.
func (l *Local) Delete(_ context.Context, snapshotID string) error {
	if err := id.ValidateSnapshotID(snapshotID); err != nil {
		return err
	}
	dir := l.dir(snapshotID)
	if err := os.Remove(filepath.Join(dir, MetaFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete snapshot %s: %w", snapshotID, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("delete snapshot %s: %w", snapshotID, err)
	}
	return nil
}

// UsedBytes implements Store: allocated bytes of every file under the root.
func (l *Local) UsedBytes() int64 {
	var total int64
	_ = filepath.WalkDir(l.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil {
			total += st.Blocks * 512
		}
		return nil
	})
	return total
}
