package snapshot

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// PruneStale removes the template snapshots in cacheDir that no current
// image can use any more: their template or version is gone from images,
// the image's bits changed (a rebuilt template), or they were made in an
// older layout (metaVersion), plus directories a crashed or outdated build
// left without a readable MetaFile, and the lock files of what it removes.
// Sandboxes restored from a removed snapshot keep running: their disks are
// clones and their memory is their own. Call it when no build is running
// in cacheDir (the agent does at start, before it serves). It returns the
// directories removed.
func PruneStale(cacheDir string, images Images) ([]string, error) {
	ents, err := os.ReadDir(cacheDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("prune template snapshots: %w", err)
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if !e.IsDir() || strings.HasPrefix(name, ".") {
			continue // lock files go with their directory; .build-* is the agent's
		}
		dir := filepath.Join(cacheDir, name)
		if !stale(dir, images) {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.Remove(dir + ".lock"); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		removed = append(removed, dir)
	}
	return removed, errors.Join(errs...)
}

// stale reports whether the snapshot in dir is unusable for good.
func stale(dir string, images Images) bool {
	data, err := os.ReadFile(filepath.Join(dir, MetaFile))
	if err != nil {
		return true
	}
	var t Template
	if err := json.Unmarshal(data, &t); err != nil || t.Key.Meta != metaVersion {
		return true
	}
	im, err := images.Resolve(t.Key.Template, t.Key.Version)
	if err != nil {
		return true
	}
	return im.CacheKey() != t.Key.Image
}
