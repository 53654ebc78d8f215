// Package snapstore keeps sandbox snapshots (explicit snapshots and
// hibernation images): a snapshot is a directory written by a VM driver's
// Instance.Snapshot plus this package's meta.json. Store is the seam where
// remote storage slots in: Local keeps snapshots in a directory on the
// host; an S3 store would upload on Put, download on Open and keep only a
// cache locally, with the same contract.
//
// Snapshot metadata holds the envd access token that was in force inside
// the snapshot (needed to rotate it when the snapshot is restored as
// another sandbox), so meta files are 0600.
package snapstore

import (
	"context"
	"time"
)

// Meta describes one snapshot.
type Meta struct {
	SnapshotID  string    `json:"snapshot_id"`
	SandboxID   string    `json:"sandbox_id"`
	Template    string    `json:"template"`
	Driver      string    `json:"driver"`
	VCPUs       int       `json:"vcpus"`
	MemoryMB    int       `json:"memory_mb"`
	DiskMB      int       `json:"disk_mb,omitempty"`
	MemBytes    int64     `json:"mem_bytes"`
	DiskBytes   int64     `json:"disk_bytes"`
	CreatedAt   time.Time `json:"created_at"`
	Hibernation bool      `json:"hibernation,omitempty"`
	AccessToken string    `json:"access_token"`
	// Location is filled by the store: "local:<dir>", "s3://bucket/key"...
	Location string `json:"location,omitempty"`
}

// Store keeps snapshots. Implementations are safe for concurrent use;
// callers serialise operations on one snapshot ID.
type Store interface {
	// Staging returns a new, empty local directory to write a snapshot
	// into before Put (on the file system the store can take it from
	// cheaply). Discard removes it if the snapshot is abandoned.
	Staging(ctx context.Context, snapshotID string) (string, error)
	Discard(dir string) error
	// Put stores the snapshot written in dir under meta.SnapshotID and
	// takes ownership of dir. Putting an ID that exists fails with
	// errdefs.ErrAlreadyExists and leaves dir to the caller.
	Put(ctx context.Context, meta Meta, dir string) (Meta, error)
	// Get reads a snapshot's metadata; errdefs.ErrNotFound when missing.
	Get(ctx context.Context, snapshotID string) (Meta, error)
	// Open makes the snapshot available as a local directory until
	// release is called (a remote store downloads it first).
	Open(ctx context.Context, snapshotID string) (dir string, meta Meta, release func(), err error)
	// List returns every snapshot, oldest first.
	List(ctx context.Context) ([]Meta, error)
	// Delete removes a snapshot; deleting a missing one succeeds.
	Delete(ctx context.Context, snapshotID string) error
	// UsedBytes is the disk space the store's local files take.
	UsedBytes() int64
}
