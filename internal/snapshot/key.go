package snapshot

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// Files of a template snapshot directory besides the driver's own.
const (
	// MetaFile describes the template snapshot; it is written last, so a
	// directory without it is not a finished snapshot.
	MetaFile = "template.json"
	// RootfsFile is the rootfs copy both drivers put in a snapshot
	// directory; sandboxes clone it.
	RootfsFile = "rootfs.ext4"
	// MemoryFile is the template VM's guest RAM, kept in the snapshot
	// directory when the driver supports file-backed memory
	// (vm.Capabilities.MemoryFile).
	MemoryFile = "mem.ram"
)

// metaVersion changes when the layout or meaning of a template snapshot
// changes, so older caches are rebuilt rather than misread.
// 2: template RAM in MemoryFile where the driver supports it.
const metaVersion = 2

// Key is everything a template snapshot depends on. Two equal keys may
// share a snapshot; anything else needs its own.
type Key struct {
	Template   string `json:"template"`
	Version    string `json:"version"`
	Image      string `json:"image"` // filesystem.Image.CacheKey: rootfs, kernel and initrd hashes
	Driver     string `json:"driver"`
	VCPUs      int    `json:"vcpus"`
	MemoryMB   int    `json:"memory_mb"`
	KernelArgs string `json:"kernel_args"`
	Warmup     string `json:"warmup"` // the guest command run before the snapshot
	Meta       int    `json:"meta_version"`
	// MemoryFile: the template VM's RAM is MemoryFile in the snapshot dir.
	MemoryFile bool `json:"memory_file,omitempty"`
}

// hash is a short digest of the whole key.
func (k Key) hash() string {
	b, _ := json.Marshal(k)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])[:12]
}

// DirName is the cache directory name for the key: readable, and unique
// through the digest.
func (k Key) DirName() string {
	return fmt.Sprintf("%s-%s-%s-%dc%dm-%s", k.Template, k.Version, k.Driver, k.VCPUs, k.MemoryMB, k.hash())
}

// Template is a built template snapshot.
type Template struct {
	Key Key `json:"key"`
	// Dir is the snapshot directory to pass to vm.Driver.Restore.
	Dir     string           `json:"-"`
	Image   filesystem.Image `json:"-"`
	BuiltAt time.Time        `json:"built_at"`
	// BootTook is the cold boot to envd healthy; BuildTook the whole build.
	BootTook  time.Duration   `json:"boot_took"`
	BuildTook time.Duration   `json:"build_took"`
	Snapshot  vm.SnapshotInfo `json:"snapshot"`
}

// Rootfs is the snapshot's rootfs copy, the source of every sandbox clone.
func (t *Template) Rootfs() string { return filepath.Join(t.Dir, RootfsFile) }

func writeMeta(dir string, t *Template) error {
	data, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, MetaFile+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", MetaFile, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, MetaFile)); err != nil {
		return fmt.Errorf("write %s: %w", MetaFile, err)
	}
	return nil
}

// readMeta loads a finished snapshot for key from dir. ok is false when
// there is none (or an unusable one, which the caller rebuilds).
func readMeta(dir string, key Key) (t *Template, ok bool, err error) {
	data, err := os.ReadFile(filepath.Join(dir, MetaFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read template snapshot %s: %w", dir, err)
	}
	t = &Template{}
	if err := json.Unmarshal(data, t); err != nil || t.Key != key {
		return nil, false, nil
	}
	if _, err := os.Stat(filepath.Join(dir, RootfsFile)); err != nil {
		return nil, false, nil
	}
	t.Dir = dir
	return t, true, nil
}
