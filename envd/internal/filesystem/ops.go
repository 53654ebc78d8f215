package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/envd/internal/entry"
	fspb "github.com/wrenn-dev/envd/internal/gen/filesystem"
	"github.com/wrenn-dev/envd/internal/permissions"
)

// Stat describes a path without following a final symlink.
func (s *Service) Stat(ctx context.Context, req *connect.Request[fspb.StatRequest]) (*connect.Response[fspb.StatResponse], error) {
	_, p, err := s.request(ctx, req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	info, err := entry.Info(p)
	if err != nil {
		return nil, fsError("stat", p, err)
	}
	return connect.NewResponse(&fspb.StatResponse{Entry: info}), nil
}

// MakeDir is mkdir -p. Directories it creates belong to the request's user.
// An existing directory (or symlink to one) is AlreadyExists; an existing
// non-directory, or a file among the parents, is InvalidArgument.
func (s *Service) MakeDir(ctx context.Context, req *connect.Request[fspb.MakeDirRequest]) (*connect.Response[fspb.MakeDirResponse], error) {
	u, p, err := s.request(ctx, req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(p)
	switch {
	case err == nil && fi.IsDir():
		return nil, connect.NewError(connect.CodeAlreadyExists, fmt.Errorf("directory %q already exists", p))
	case err == nil:
		return nil, invalid(p, "exists and is not a directory")
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fsError("make directory", p, err)
	}
	if _, lerr := os.Lstat(p); lerr == nil {
		return nil, invalid(p, "is a dangling symbolic link")
	}
	if err := ensureDirs(p, u); err != nil {
		return nil, err
	}
	info, err := entry.Info(p)
	if err != nil {
		return nil, fsError("stat", p, err)
	}
	return connect.NewResponse(&fspb.MakeDirResponse{Entry: info}), nil
}

// Move renames source to destination with rename(2) semantics (an existing
// file at the destination is replaced, a non-empty directory is not),
// creating the destination's missing parents for the request's user. Across
// filesystems it falls back to copy-then-delete.
func (s *Service) Move(ctx context.Context, req *connect.Request[fspb.MoveRequest]) (*connect.Response[fspb.MoveResponse], error) {
	u, src, err := s.request(ctx, req.Msg.GetSource())
	if err != nil {
		return nil, err
	}
	dst, err := s.resolve(u, req.Msg.GetDestination())
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(src); err != nil {
		return nil, fsError("move", src, err)
	}
	if err := ensureDirs(filepath.Dir(dst), u); err != nil {
		return nil, err
	}
	err = os.Rename(src, dst)
	if errors.Is(err, syscall.EXDEV) {
		err = moveAcross(ctx, src, dst)
	}
	if err != nil {
		return nil, fsError("move "+src+" to", dst, err)
	}
	info, err := entry.Info(dst)
	if err != nil {
		return nil, fsError("stat", dst, err)
	}
	return connect.NewResponse(&fspb.MoveResponse{Entry: info}), nil
}

// Remove deletes a file, symlink or whole directory tree. Removing "/" is
// refused.
func (s *Service) Remove(ctx context.Context, req *connect.Request[fspb.RemoveRequest]) (*connect.Response[fspb.RemoveResponse], error) {
	_, p, err := s.request(ctx, req.Msg.GetPath())
	if err != nil {
		return nil, err
	}
	if p == "/" {
		return nil, invalid(p, "refusing to remove the root directory")
	}
	if _, err := os.Lstat(p); err != nil {
		return nil, fsError("remove", p, err)
	}
	if err := os.RemoveAll(p); err != nil {
		return nil, fsError("remove", p, err)
	}
	return connect.NewResponse(&fspb.RemoveResponse{}), nil
}

// ensureDirs is mkdir -p for dir with the created directories owned by u;
// a non-directory on the way is InvalidArgument naming it.
func ensureDirs(dir string, u *permissions.User) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				return invalid(d, "is not a directory")
			}
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fsError("stat", d, err)
		}
		if d == "/" {
			break
		}
	}
	if err := permissions.EnsureDirs(dir, u.UID, u.GID); err != nil {
		return fsError("make directory", dir, err)
	}
	return nil
}
