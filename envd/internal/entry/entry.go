// Package entry builds the EntryInfo message that describes one file, shared
// by the Filesystem RPCs and the /files HTTP routes. File metadata is kept in
// the extended attributes user.e2b.<key>, as E2B's envd does.
package entry

import (
	"errors"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/timestamppb"

	fspb "github.com/wrenn-dev/envd/internal/gen/filesystem"
)

// MetadataPrefix is the xattr namespace that holds per-file metadata.
const MetadataPrefix = "user.e2b."

// Info describes path without following a final symlink.
func Info(path string) (*fspb.EntryInfo, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	return FromFileInfo(path, fi), nil
}

// FromFileInfo builds the message from an existing Lstat result.
func FromFileInfo(path string, fi fs.FileInfo) *fspb.EntryInfo {
	e := &fspb.EntryInfo{
		Name:         fi.Name(),
		Path:         path,
		Size:         fi.Size(),
		Mode:         uint32(fi.Mode().Perm()),
		Permissions:  fi.Mode().String(),
		ModifiedTime: timestamppb.New(fi.ModTime()),
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		e.Type = fspb.FileType_FILE_TYPE_SYMLINK
		if target, err := os.Readlink(path); err == nil {
			if !filepath.IsAbs(target) {
				target = filepath.Join(filepath.Dir(path), target)
			}
			e.SymlinkTarget = &target
		}
	case fi.IsDir():
		e.Type = fspb.FileType_FILE_TYPE_DIRECTORY
	default:
		e.Type = fspb.FileType_FILE_TYPE_FILE
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.Owner = userName(st.Uid)
		e.Group = groupName(st.Gid)
	}
	if md := ReadMetadata(path); len(md) > 0 {
		e.Metadata = md
	}
	return e
}

// ReadMetadata returns the user.e2b.* xattrs of path; errors (no xattr
// support, no attributes) yield an empty map.
func ReadMetadata(path string) map[string]string {
	size, err := unix.Llistxattr(path, nil)
	if err != nil || size <= 0 {
		return nil
	}
	buf := make([]byte, size)
	size, err = unix.Llistxattr(path, buf)
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for _, name := range strings.Split(string(buf[:size]), "\x00") {
		key, ok := strings.CutPrefix(name, MetadataPrefix)
		if !ok || key == "" {
			continue
		}
		val := make([]byte, 4096)
		n, err := unix.Lgetxattr(path, name, val)
		if err != nil {
			continue
		}
		out[key] = string(val[:n])
	}
	return out
}

// ErrXattrUnsupported is returned when the filesystem cannot store metadata.
var ErrXattrUnsupported = errors.New("filesystem does not support metadata (xattrs)")

// ReplaceMetadata removes every user.e2b.* xattr of path and sets md.
func ReplaceMetadata(path string, md map[string]string) error {
	for key := range ReadMetadata(path) {
		_ = unix.Lremovexattr(path, MetadataPrefix+key)
	}
	for k, v := range md {
		if err := unix.Lsetxattr(path, MetadataPrefix+k, []byte(v), 0); err != nil {
			if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) {
				return ErrXattrUnsupported
			}
			return err
		}
	}
	return nil
}

var names sync.Map // "u123" / "g123" -> name

func userName(uid uint32) string {
	key := "u" + strconv.FormatUint(uint64(uid), 10)
	if v, ok := names.Load(key); ok {
		return v.(string)
	}
	name := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	names.Store(key, name)
	return name
}

func groupName(gid uint32) string {
	key := "g" + strconv.FormatUint(uint64(gid), 10)
	if v, ok := names.Load(key); ok {
		return v.(string)
	}
	name := strconv.FormatUint(uint64(gid), 10)
	if g, err := user.LookupGroupId(name); err == nil {
		name = g.Name
	}
	names.Store(key, name)
	return name
}
