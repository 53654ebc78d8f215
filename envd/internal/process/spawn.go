package process

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	pb "github.com/wrenn-dev/envd/internal/gen/process"
	"github.com/wrenn-dev/envd/internal/permissions"
)

// defaultPath is the child's PATH when envd itself has none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// outputPipeSize is the capacity asked for stdout and stderr pipes.
const outputPipeSize = 1 << 20

// validateConfig rejects what the kernel would refuse with a vague EINVAL.
func validateConfig(cfg *pb.ProcessConfig) error {
	if cfg == nil {
		return errors.New("process config is required")
	}
	if cfg.GetCmd() == "" {
		return errors.New("process cmd is required")
	}
	if strings.IndexByte(cfg.GetCmd(), 0) >= 0 {
		return errors.New("process cmd contains a NUL byte")
	}
	for i, a := range cfg.GetArgs() {
		if strings.IndexByte(a, 0) >= 0 {
			return fmt.Errorf("process arg %d contains a NUL byte", i)
		}
	}
	for k, v := range cfg.GetEnvs() {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("invalid environment variable %q", k)
		}
	}
	return nil
}

// buildEnv assembles the child's environment: PATH, HOME, USER, LOGNAME,
// E2B_SANDBOX, then the /init defaults, then the request's variables. A
// later value replaces an earlier one in place, so every name appears once
// (glibc's getenv would otherwise see the first, bash the last).
func buildEnv(u *permissions.User, defaults, req map[string]string) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = defaultPath
	}
	var names []string
	vals := map[string]string{}
	set := func(k, v string) {
		if _, ok := vals[k]; !ok {
			names = append(names, k)
		}
		vals[k] = v
	}
	set("PATH", path)
	set("HOME", u.Home)
	set("USER", u.Name)
	set("LOGNAME", u.Name)
	set("E2B_SANDBOX", "true")
	for _, k := range slices.Sorted(maps.Keys(defaults)) {
		set(k, defaults[k])
	}
	for _, k := range slices.Sorted(maps.Keys(req)) {
		set(k, req[k])
	}
	env := make([]string, len(names))
	for i, k := range names {
		env[i] = k + "=" + vals[k]
	}
	return env
}

// envValue returns the value of name in env.
func envValue(env []string, name string) string {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

// resolveCwd picks the child's working directory. An explicit cwd is
// expanded (~, relative to the default workdir or home) and must be an
// existing directory. Without one the default workdir, else the user's
// home, is used; if that does not exist (users like nobody have no home)
// the child starts in / rather than failing.
func resolveCwd(cwd, workdir string, u *permissions.User) (string, error) {
	if cwd == "" {
		dir := u.Home
		if workdir != "" {
			dir = workdir
		}
		dir, err := permissions.ExpandPath(dir, u, "")
		if err != nil {
			return "/", nil
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return "/", nil
		}
		return dir, nil
	}
	dir, err := permissions.ExpandPath(cwd, u, workdir)
	if err != nil {
		return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cwd %q: %w", cwd, err))
	}
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cwd %q does not exist", dir))
	case err != nil:
		return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cwd %q: %w", dir, err))
	case !fi.IsDir():
		return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cwd %q is not a directory", dir))
	}
	return dir, nil
}

// lookPath finds the executable for cmd like a shell would: a name with a
// slash is a path (relative to the child's cwd), anything else is searched
// in the child's PATH.
func lookPath(cmd, path, cwd string) (string, error) {
	if strings.Contains(cmd, "/") {
		p := cmd
		if !filepath.IsAbs(p) {
			p = filepath.Join(cwd, p)
		}
		fi, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return "", connect.NewError(connect.CodeNotFound, fmt.Errorf("executable %q not found", cmd))
		case err != nil:
			return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("executable %q: %w", cmd, err))
		case fi.IsDir():
			return "", connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("executable %q is a directory", cmd))
		}
		return p, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" || !filepath.IsAbs(dir) {
			dir = filepath.Join(cwd, dir)
		}
		p := filepath.Join(dir, cmd)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", connect.NewError(connect.CodeNotFound, fmt.Errorf("executable %q not found in PATH %q", cmd, path))
}

// startError turns a fork/exec failure into a connect error.
func startError(cmd string, err error) error {
	err = fmt.Errorf("start %q: %w", cmd, err)
	switch {
	case errors.Is(err, syscall.ENOENT):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return connect.NewError(connect.CodePermissionDenied, err)
	case errors.Is(err, syscall.ENOEXEC), errors.Is(err, syscall.E2BIG), errors.Is(err, syscall.ENOTDIR),
		errors.Is(err, syscall.EISDIR), errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.EINVAL):
		return connect.NewError(connect.CodeInvalidArgument, err)
	case errors.Is(err, syscall.EAGAIN), errors.Is(err, syscall.ENOMEM),
		errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return connect.NewError(connect.CodeResourceExhausted, err)
	}
	return connect.NewError(connect.CodeInternal, err)
}

// credential returns the identity the child runs as, or nil when envd
// already is that user and cannot change identity anyway (not root).
func credential(u *permissions.User) *syscall.Credential {
	if os.Geteuid() != 0 && uint32(os.Geteuid()) == u.UID && uint32(os.Getegid()) == u.GID {
		return nil
	}
	groups := u.Groups
	if len(groups) == 0 {
		groups = []uint32{u.GID}
	}
	return &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: groups}
}

// stdio is the set of descriptors for one child: ours (kept, as pollable
// files) and the child's (closed once it has been forked).
type stdio struct {
	child   [3]int
	stdout  *os.File
	stderr  *os.File
	stdin   *os.File
	pty     *os.File
	closers []int // child-side descriptors to close after fork
}

// closeChild closes the child's side.
func (s *stdio) closeChild() {
	for _, fd := range s.closers {
		unix.Close(fd)
	}
	s.closers = nil
}

// closeAll closes everything, for a failed start.
func (s *stdio) closeAll() {
	s.closeChild()
	for _, f := range []*os.File{s.stdout, s.stderr, s.stdin, s.pty} {
		if f != nil {
			f.Close()
		}
	}
}

// newStdio creates the pipes or PTY a child needs.
func newStdio(ptyReq *pb.PTY, wantStdin bool) (*stdio, error) {
	s := &stdio{}
	if ptyReq != nil {
		m, slave, err := openPTY()
		if err != nil {
			return nil, err
		}
		s.pty = m
		s.closers = append(s.closers, slave)
		s.child = [3]int{slave, slave, slave}
		if err := setWinsize(m, ptyReq.GetSize().GetCols(), ptyReq.GetSize().GetRows()); err != nil {
			s.closeAll()
			return nil, err
		}
		return s, nil
	}
	var err error
	if s.stdout, s.child[1], err = s.pipeFrom("stdout"); err != nil {
		s.closeAll()
		return nil, err
	}
	if s.stderr, s.child[2], err = s.pipeFrom("stderr"); err != nil {
		s.closeAll()
		return nil, err
	}
	if !wantStdin {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			s.closeAll()
			return nil, fmt.Errorf("open /dev/null: %w", err)
		}
		s.closers = append(s.closers, fd)
		s.child[0] = fd
		return s, nil
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		s.closeAll()
		return nil, fmt.Errorf("stdin pipe: %w", err)
	}
	s.closers = append(s.closers, p[0])
	s.child[0] = p[0]
	if err := unix.SetNonblock(p[1], true); err != nil {
		unix.Close(p[1])
		s.closeAll()
		return nil, fmt.Errorf("stdin pipe: %w", err)
	}
	s.stdin = os.NewFile(uintptr(p[1]), "stdin")
	return s, nil
}

// pipeFrom makes a pipe the child writes to; our read end is pollable.
func (s *stdio) pipeFrom(name string) (*os.File, int, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, -1, fmt.Errorf("%s pipe: %w", name, err)
	}
	s.closers = append(s.closers, p[1])
	// A larger pipe lets a chatty child run ahead of the network; best
	// effort (the default is 64 KiB, unprivileged limit 1 MiB).
	_, _ = unix.FcntlInt(uintptr(p[0]), unix.F_SETPIPE_SZ, outputPipeSize)
	if err := unix.SetNonblock(p[0], true); err != nil {
		unix.Close(p[0])
		return nil, -1, fmt.Errorf("%s pipe: %w", name, err)
	}
	return os.NewFile(uintptr(p[0]), name), p[1], nil
}

// procAttr is how the child is forked: own process group (or own session
// with the PTY as controlling terminal), the user's identity, cwd and env.
func procAttr(s *stdio, cwd string, env []string, u *permissions.User) *syscall.ProcAttr {
	sys := &syscall.SysProcAttr{Credential: credential(u)}
	if s.pty != nil {
		sys.Setsid = true
		sys.Setctty = true
		sys.Ctty = 0
	} else {
		sys.Setpgid = true
	}
	return &syscall.ProcAttr{
		Dir:   cwd,
		Env:   env,
		Files: []uintptr{uintptr(s.child[0]), uintptr(s.child[1]), uintptr(s.child[2])},
		Sys:   sys,
	}
}
