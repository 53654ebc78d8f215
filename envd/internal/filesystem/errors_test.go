package filesystem

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unicode/utf8"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	fspb "github.com/wrenn-dev/envd/internal/gen/filesystem"
	"github.com/wrenn-dev/envd/internal/permissions"
)

func TestFsError(t *testing.T) {
	pe := func(e error) error { return &fs.PathError{Op: "lstat", Path: "/x", Err: e} }
	cases := []struct {
		err  error
		code connect.Code
	}{
		{pe(syscall.ENOENT), connect.CodeNotFound},
		{pe(syscall.EEXIST), connect.CodeAlreadyExists},
		{&os.LinkError{Op: "rename", Old: "/a", New: "/b", Err: syscall.ENOTEMPTY}, connect.CodeAlreadyExists},
		{pe(syscall.EACCES), connect.CodePermissionDenied},
		{pe(syscall.EPERM), connect.CodePermissionDenied},
		{pe(syscall.ENOTDIR), connect.CodeInvalidArgument},
		{pe(syscall.EISDIR), connect.CodeInvalidArgument},
		{pe(syscall.ENAMETOOLONG), connect.CodeInvalidArgument},
		{pe(syscall.ELOOP), connect.CodeInvalidArgument},
		{pe(syscall.ENOSPC), connect.CodeResourceExhausted},
		{os.NewSyscallError("inotify_init1", syscall.EMFILE), connect.CodeResourceExhausted},
		{pe(syscall.EROFS), connect.CodeFailedPrecondition},
		{pe(syscall.EIO), connect.CodeInternal},
		{fmt.Errorf("x: %w", permissions.ErrBadPath), connect.CodeInvalidArgument},
		{context.Canceled, connect.CodeCanceled},
		{connect.NewError(connect.CodeAborted, errors.New("kept")), connect.CodeAborted},
	}
	for _, c := range cases {
		err := fsError("stat", "/some/path", c.err)
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != c.code {
			t.Errorf("%v: %v, want code %v", c.err, err, c.code)
			continue
		}
		if c.code != connect.CodeAborted && !strings.Contains(ce.Message(), `"/some/path"`) {
			t.Errorf("%v: message %q does not name the path", c.err, ce.Message())
		}
	}
	if fsError("stat", "/p", nil) != nil {
		t.Error("nil error mapped to non-nil")
	}
	if msg := fsError("stat", "/p", pe(syscall.ENOENT)).(*connect.Error).Message(); msg != `stat "/p": no such file or directory` {
		t.Errorf("message %q", msg)
	}
}

func TestNetworkMount(t *testing.T) {
	if fsType, err := networkMount(t.TempDir()); err != nil || fsType != "" {
		t.Fatalf("temp dir classified as %q, %v", fsType, err)
	}
	if _, err := networkMount(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing path: %v", err)
	}
	for magic, want := range map[uint32]string{unix.NFS_SUPER_MAGIC: "nfs", unix.CIFS_SUPER_MAGIC: "cifs", unix.FUSE_SUPER_MAGIC: "fuse", unix.EXT4_SUPER_MAGIC: "", unix.TMPFS_MAGIC: ""} {
		if got := networkFS[magic]; got != want {
			t.Errorf("magic %#x = %q, want %q", magic, got, want)
		}
	}
}

// TestMoveAcrossFilesystems moves between the test's temp dir and
// /dev/shm when those are different filesystems, through the handler.
func TestMoveAcrossFilesystems(t *testing.T) {
	requireRoot(t)
	f := newFixture(t)
	var a, b unix.Stat_t
	if unix.Stat(f.home, &a) != nil || unix.Stat("/dev/shm", &b) != nil || a.Dev == b.Dev {
		t.Skip("needs /dev/shm on a different filesystem from the temp dir")
	}
	shm, err := os.MkdirTemp("/dev/shm", "fs-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	write(t, filepath.Join(f.home, "tree/f"), "payload")
	dst := filepath.Join(shm, "deeper/tree")
	resp, err := f.client.Move(context.Background(), request(&fspb.MoveRequest{Source: "tree", Destination: dst}))
	wantCode(t, "Move across", err, 0)
	if resp.Msg.GetEntry().GetPath() != dst {
		t.Fatalf("entry %v", resp.Msg.GetEntry())
	}
	if b, err := os.ReadFile(filepath.Join(dst, "f")); err != nil || string(b) != "payload" {
		t.Fatalf("content %q %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(f.home, "tree")); !os.IsNotExist(err) {
		t.Fatalf("source left: %v", err)
	}
}

// FuzzStatListDir feeds arbitrary paths to Stat and ListDir, both directly
// and through the Connect handler. Neither may panic, and every error must
// be a connect error with a real code.
func FuzzStatListDir(f *testing.F) {
	for _, seed := range []string{
		"", "/", ".", "..", "~", "~/..", "~user", "\x00", "a\x00b", "../../etc", "a/b/../../..",
		"//", "/dev/null", "/proc/self/fd", strings.Repeat("a/", 3000), strings.Repeat("x", 256),
		"\u00e9t\u00e9", " ", "./~", "~/~/~",
	} {
		f.Add(seed)
	}
	fx := newFixture(f)
	write := func(p string) { os.WriteFile(filepath.Join(fx.home, p), nil, 0o644) }
	write("file")
	f.Fuzz(func(t *testing.T, p string) {
		if !utf8.ValidString(p) {
			t.Skip("proto3 strings are UTF-8; the client refuses to encode this")
		}
		ctx := fx.rootCtx(context.Background())
		check := func(what string, err error) {
			if err == nil {
				return
			}
			var ce *connect.Error
			if !errors.As(err, &ce) {
				t.Fatalf("%s(%q): %T %v is not a connect error", what, p, err, err)
			}
			if ce.Code() == connect.CodeUnknown || ce.Code() == connect.CodeUnavailable {
				t.Fatalf("%s(%q): code %v: %v", what, p, ce.Code(), err)
			}
		}
		_, err := fx.svc.Stat(ctx, connect.NewRequest(&fspb.StatRequest{Path: p}))
		check("Stat direct", err)
		_, err = fx.svc.ListDir(ctx, connect.NewRequest(&fspb.ListDirRequest{Path: p, Depth: 1}))
		check("ListDir direct", err)
		_, err = fx.client.Stat(context.Background(), connect.NewRequest(&fspb.StatRequest{Path: p}))
		check("Stat", err)
		_, err = fx.client.ListDir(context.Background(), connect.NewRequest(&fspb.ListDirRequest{Path: p, Depth: 1}))
		check("ListDir", err)
	})
}
