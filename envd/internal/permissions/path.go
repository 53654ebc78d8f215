package permissions

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrBadPath is returned for a path that cannot name a file.
var ErrBadPath = errors.New("invalid path")

// ExpandPath makes p absolute and clean: "~" and "~/x" expand to the user's
// home, and a relative path is taken from workdir when it is set, else from
// the home directory.
func ExpandPath(p string, u *User, workdir string) (string, error) {
	if p == "" {
		return "", fmt.Errorf("%w: empty path", ErrBadPath)
	}
	if strings.IndexByte(p, 0) >= 0 {
		return "", fmt.Errorf("%w: NUL byte in path", ErrBadPath)
	}
	home := "/"
	if u != nil && u.Home != "" {
		home = u.Home
	}
	switch {
	case p == "~":
		p = home
	case strings.HasPrefix(p, "~/"):
		p = filepath.Join(home, p[2:])
	case !filepath.IsAbs(p):
		base := workdir
		if base == "" {
			base = home
		}
		p = filepath.Join(base, p)
	}
	return filepath.Clean(p), nil
}

// EnsureDirs creates every missing directory of dir (mkdir -p) and hands each
// one it created to uid:gid. Existing directories are left as they are.
func EnsureDirs(dir string, uid, gid uint32) error {
	dir = filepath.Clean(dir)
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s: not a directory", d)
			}
			break
		}
		if !errors.Is(err, os.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		if d == "/" || d == "." {
			break
		}
	}
	for i := len(missing) - 1; i >= 0; i-- {
		d := missing[i]
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if err := os.Lchown(d, int(uid), int(gid)); err != nil && !errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("chown %s: %w", d, err)
		}
	}
	return nil
}
