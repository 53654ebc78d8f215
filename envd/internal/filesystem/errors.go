package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/envd/internal/permissions"
)

// fsError turns the error of operation op on path into a connect error whose
// code follows the errno and whose message names the operation and path.
// Connect errors pass through unchanged.
func fsError(op, path string, err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	return connect.NewError(codeOf(err), fmt.Errorf("%s %q: %w", op, path, cause(err)))
}

// cause strips the *PathError/*LinkError/*SyscallError wrapper, whose text
// repeats the path, leaving the errno.
func cause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}

// codeOf maps an error from the os package to a connect code.
func codeOf(err error) connect.Code {
	var errno syscall.Errno
	switch {
	case errors.Is(err, permissions.ErrBadPath):
		return connect.CodeInvalidArgument
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	case errors.Is(err, fs.ErrNotExist):
		return connect.CodeNotFound
	case errors.Is(err, fs.ErrExist): // EEXIST, ENOTEMPTY
		return connect.CodeAlreadyExists
	case errors.Is(err, fs.ErrPermission): // EACCES, EPERM
		return connect.CodePermissionDenied
	case errors.As(err, &errno):
		switch errno {
		case syscall.ENOTDIR, syscall.EISDIR, syscall.EINVAL, syscall.ENAMETOOLONG, syscall.ELOOP:
			return connect.CodeInvalidArgument
		case syscall.ENOSPC, syscall.EDQUOT, syscall.EMFILE, syscall.ENFILE, syscall.ENOMEM:
			return connect.CodeResourceExhausted
		case syscall.EROFS, syscall.EBUSY, syscall.ETXTBSY:
			return connect.CodeFailedPrecondition
		}
	}
	return connect.CodeInternal
}

// invalid builds an InvalidArgument error naming path.
func invalid(path, format string, args ...any) error {
	return connect.NewError(connect.CodeInvalidArgument,
		fmt.Errorf("%q: %s", path, fmt.Sprintf(format, args...)))
}
