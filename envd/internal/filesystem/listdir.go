package filesystem

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/envd/internal/entry"
	fspb "github.com/wrenn-dev/envd/internal/gen/filesystem"
)

// ListDir lists a directory up to depth levels deep (0 is read as 1), in
// lexical pre-order: each directory entry is followed by its own entries.
// The requested path may be a symlink to a directory; symlinks below it are
// reported as symlinks and never descended. Entry paths are the requested
// absolute path joined with the names below it. Subdirectories that cannot
// be read, and entries that vanish while listing, are skipped.
func (s *Service) ListDir(ctx context.Context, req *connect.Request[fspb.ListDirRequest]) (*connect.Response[fspb.ListDirResponse], error) {
	_, p, err := s.request(ctx, req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	depth := int(req.Msg.GetDepth())
	if depth < 1 {
		depth = 1
	}
	fi, err := os.Stat(p)
	if err != nil {
		return nil, fsError("list", p, err)
	}
	if !fi.IsDir() {
		return nil, invalid(p, "is not a directory")
	}
	des, err := os.ReadDir(p)
	if err != nil {
		return nil, fsError("list", p, err)
	}
	var out []*fspb.EntryInfo
	if err := s.walk(ctx, p, des, depth, &out); err != nil {
		return nil, fsError("list", p, err)
	}
	return connect.NewResponse(&fspb.ListDirResponse{Entries: out}), nil
}

// walk appends the entries des of dir, descending into real directories
// while depth allows.
func (s *Service) walk(ctx context.Context, dir string, des []fs.DirEntry, depth int, out *[]*fspb.EntryInfo) error {
	for _, de := range des {
		if err := ctx.Err(); err != nil {
			return err
		}
		full := filepath.Join(dir, de.Name())
		fi, err := de.Info() // lstat
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		*out = append(*out, entry.FromFileInfo(full, fi))
		if depth <= 1 || !fi.IsDir() {
			continue
		}
		sub, err := os.ReadDir(full)
		if err != nil {
			s.log.Debug("list: skipping unreadable directory", "path", full, "err", err)
			continue
		}
		if err := s.walk(ctx, full, sub, depth-1, out); err != nil {
			return err
		}
	}
	return nil
}
