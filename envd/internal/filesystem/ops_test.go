package filesystem

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"connectrpc.com/connect"

	fspb "github.com/wrenn-dev/envd/internal/gen/filesystem"
	"github.com/wrenn-dev/envd/internal/state"
)

func TestStat(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	file := filepath.Join(f.home, "file.txt")
	write(t, file, "hello")
	dir := filepath.Join(f.home, "dir")
	os.Mkdir(dir, 0o750)
	link := filepath.Join(f.home, "link")
	os.Symlink("dir", link)

	cases := []struct {
		name     string
		path     string
		headers  []string
		code     connect.Code
		wantPath string
		wantType fspb.FileType
	}{
		{name: "file", path: file, wantPath: file, wantType: fspb.FileType_FILE_TYPE_FILE},
		{name: "dir", path: dir, wantPath: dir, wantType: fspb.FileType_FILE_TYPE_DIRECTORY},
		{name: "symlink not followed", path: link, wantPath: link, wantType: fspb.FileType_FILE_TYPE_SYMLINK},
		{name: "relative to home", path: "file.txt", wantPath: file, wantType: fspb.FileType_FILE_TYPE_FILE},
		{name: "tilde", path: "~/dir", wantPath: dir, wantType: fspb.FileType_FILE_TYPE_DIRECTORY},
		{name: "dot dot cleaned", path: "dir/../file.txt", wantPath: file, wantType: fspb.FileType_FILE_TYPE_FILE},
		{name: "missing", path: filepath.Join(f.home, "nope"), code: connect.CodeNotFound},
		{name: "under a file", path: file + "/x", code: connect.CodeInvalidArgument},
		{name: "empty", path: "", code: connect.CodeInvalidArgument},
		{name: "NUL", path: "a\x00b", code: connect.CodeInvalidArgument},
		{name: "name too long", path: strings.Repeat("x", 300), code: connect.CodeInvalidArgument},
		{name: "unauthenticated", path: file, headers: []string{hdrUnauth, "1"}, code: connect.CodeUnauthenticated},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := f.client.Stat(ctx, request(&fspb.StatRequest{Path: c.path}, c.headers...))
			wantCode(t, "Stat", err, c.code)
			if c.code != 0 {
				return
			}
			e := resp.Msg.GetEntry()
			if e.GetPath() != c.wantPath || e.GetType() != c.wantType || e.GetName() != filepath.Base(c.wantPath) {
				t.Fatalf("entry = %v, want path %s type %v", e, c.wantPath, c.wantType)
			}
		})
	}

	resp, err := f.client.Stat(ctx, request(&fspb.StatRequest{Path: file}))
	wantCode(t, "Stat", err, 0)
	if e := resp.Msg.GetEntry(); e.GetSize() != 5 || e.GetMode() != 0o644 || e.GetOwner() != "root" {
		t.Fatalf("file entry = %v", e)
	}
	resp, err = f.client.Stat(ctx, request(&fspb.StatRequest{Path: link}))
	wantCode(t, "Stat link", err, 0)
	if got := resp.Msg.GetEntry().GetSymlinkTarget(); got != dir {
		t.Fatalf("symlink target %q, want %q", got, dir)
	}
}

func TestRelativeToWorkdir(t *testing.T) {
	f := newFixture(t)
	work := t.TempDir()
	write(t, filepath.Join(work, "w.txt"), "x")
	if _, err := f.st.Apply(state.Init{DefaultWorkdir: &work}, ""); err != nil {
		t.Fatal(err)
	}
	resp, err := f.client.Stat(context.Background(), request(&fspb.StatRequest{Path: "w.txt"}))
	wantCode(t, "Stat", err, 0)
	if got := resp.Msg.GetEntry().GetPath(); got != filepath.Join(work, "w.txt") {
		t.Fatalf("path %q", got)
	}
	// "~" still means home, not the workdir.
	resp, err = f.client.Stat(context.Background(), request(&fspb.StatRequest{Path: "~"}))
	wantCode(t, "Stat ~", err, 0)
	if got := resp.Msg.GetEntry().GetPath(); got != f.home {
		t.Fatalf("~ = %q, want %q", got, f.home)
	}
}

func TestMakeDir(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	file := filepath.Join(f.home, "file")
	write(t, file, "")
	os.Symlink("missing-target", filepath.Join(f.home, "dangling"))
	os.Symlink(f.home, filepath.Join(f.home, "homelink"))

	cases := []struct {
		name string
		path string
		code connect.Code
	}{
		{name: "nested", path: "a/b/c"},
		{name: "exists", path: "a/b", code: connect.CodeAlreadyExists},
		{name: "home exists", path: "~", code: connect.CodeAlreadyExists},
		{name: "symlink to dir exists", path: "homelink", code: connect.CodeAlreadyExists},
		{name: "is a file", path: "file", code: connect.CodeInvalidArgument},
		{name: "parent is a file", path: "file/x/y", code: connect.CodeInvalidArgument},
		{name: "dangling symlink", path: "dangling", code: connect.CodeInvalidArgument},
		{name: "empty", path: "", code: connect.CodeInvalidArgument},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := f.client.MakeDir(ctx, request(&fspb.MakeDirRequest{Path: c.path}))
			wantCode(t, "MakeDir", err, c.code)
			if c.code != 0 {
				return
			}
			want := filepath.Join(f.home, c.path)
			e := resp.Msg.GetEntry()
			if e.GetPath() != want || e.GetType() != fspb.FileType_FILE_TYPE_DIRECTORY {
				t.Fatalf("entry %v, want directory %s", e, want)
			}
			if fi, err := os.Stat(want); err != nil || !fi.IsDir() {
				t.Fatalf("not created: %v", err)
			}
		})
	}
}

func TestMakeDirOwnership(t *testing.T) {
	requireRoot(t)
	f := newFixture(t)
	const uid = 4321
	_, err := f.client.MakeDir(context.Background(), request(&fspb.MakeDirRequest{Path: "p/q"}, hdrUID, "4321"))
	wantCode(t, "MakeDir", err, 0)
	for _, d := range []string{"p", "p/q"} {
		assertOwner(t, filepath.Join(f.home, d), uid)
	}
	assertOwner(t, f.home, 0) // existing parents keep their owner
}

func assertOwner(t *testing.T, path string, uid uint32) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != uid || st.Gid != uid {
		t.Fatalf("%s owned by %d:%d, want %d:%d", path, st.Uid, st.Gid, uid, uid)
	}
}

func TestMove(t *testing.T) {
	requireRoot(t)
	f := newFixture(t)
	ctx := context.Background()
	write(t, filepath.Join(f.home, "src.txt"), "data")
	write(t, filepath.Join(f.home, "tree/inner/x"), "x")
	write(t, filepath.Join(f.home, "full/keep"), "k")
	write(t, filepath.Join(f.home, "afile"), "")

	resp, err := f.client.Move(ctx, request(&fspb.MoveRequest{Source: "src.txt", Destination: "new/parents/dst.txt"}, hdrUID, "777"))
	wantCode(t, "Move file", err, 0)
	dst := filepath.Join(f.home, "new/parents/dst.txt")
	if e := resp.Msg.GetEntry(); e.GetPath() != dst || e.GetType() != fspb.FileType_FILE_TYPE_FILE {
		t.Fatalf("entry %v", e)
	}
	if b, err := os.ReadFile(dst); err != nil || string(b) != "data" {
		t.Fatalf("moved content %q %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(f.home, "src.txt")); !os.IsNotExist(err) {
		t.Fatalf("source still there: %v", err)
	}
	assertOwner(t, filepath.Join(f.home, "new"), 777)
	assertOwner(t, filepath.Join(f.home, "new/parents"), 777)
	assertOwner(t, dst, 0) // the moved file keeps its owner

	_, err = f.client.Move(ctx, request(&fspb.MoveRequest{Source: "tree", Destination: "moved"}))
	wantCode(t, "Move dir", err, 0)
	if _, err := os.Stat(filepath.Join(f.home, "moved/inner/x")); err != nil {
		t.Fatal(err)
	}

	errCases := []struct {
		name     string
		src, dst string
		code     connect.Code
	}{
		{"missing source", "nope", "x", connect.CodeNotFound},
		{"onto non-empty dir", "moved", "full", connect.CodeAlreadyExists},
		{"into itself", "moved", "moved/inner/self", connect.CodeInvalidArgument},
		{"parent is a file", "moved", "afile/x", connect.CodeInvalidArgument},
		{"empty destination", "moved", "", connect.CodeInvalidArgument},
	}
	for _, c := range errCases {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.client.Move(ctx, request(&fspb.MoveRequest{Source: c.src, Destination: c.dst}))
			wantCode(t, "Move", err, c.code)
		})
	}
}

func TestMoveAcrossCopiesTree(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	src := filepath.Join(base, "src")
	write(t, filepath.Join(src, "sub/file"), "content")
	os.Chmod(filepath.Join(src, "sub/file"), 0o640)
	os.Chown(filepath.Join(src, "sub/file"), 55, 66)
	os.Symlink("sub/file", filepath.Join(src, "link"))
	os.Chmod(filepath.Join(src, "sub"), 0o500)

	dst := filepath.Join(base, "dst")
	if err := moveAcross(context.Background(), src, dst); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(src); !os.IsNotExist(err) {
		t.Fatalf("source not removed: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(dst, "sub/file"))
	if err != nil || string(b) != "content" {
		t.Fatalf("content %q %v", b, err)
	}
	fi, _ := os.Lstat(filepath.Join(dst, "sub/file"))
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o640 || st.Uid != 55 || st.Gid != 66 {
		t.Fatalf("file mode %v owner %d:%d", fi.Mode(), st.Uid, st.Gid)
	}
	if fi, _ := os.Lstat(filepath.Join(dst, "sub")); fi.Mode().Perm() != 0o500 {
		t.Fatalf("dir mode %v", fi.Mode())
	}
	if target, err := os.Readlink(filepath.Join(dst, "link")); err != nil || target != "sub/file" {
		t.Fatalf("link %q %v", target, err)
	}
	ents, _ := os.ReadDir(base)
	if len(ents) != 1 {
		t.Fatalf("temporary copy left behind: %v", ents)
	}
}

func TestRemove(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	write(t, filepath.Join(f.home, "f"), "")
	write(t, filepath.Join(f.home, "tree/a/b"), "")
	write(t, filepath.Join(f.home, "target"), "")
	os.Symlink("target", filepath.Join(f.home, "link"))

	cases := []struct {
		name string
		path string
		code connect.Code
	}{
		{name: "file", path: "f"},
		{name: "tree", path: "tree"},
		{name: "symlink only", path: "link"},
		{name: "missing", path: "f", code: connect.CodeNotFound},
		{name: "root refused", path: "/", code: connect.CodeInvalidArgument},
		{name: "empty", path: "", code: connect.CodeInvalidArgument},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := f.client.Remove(ctx, request(&fspb.RemoveRequest{Path: c.path}))
			wantCode(t, "Remove", err, c.code)
			if c.code == 0 {
				if _, err := os.Lstat(filepath.Join(f.home, c.path)); !os.IsNotExist(err) {
					t.Fatalf("still there: %v", err)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(f.home, "target")); err != nil {
		t.Fatalf("symlink target removed: %v", err)
	}
}

func TestListDir(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	root := filepath.Join(f.home, "root")
	write(t, filepath.Join(root, "a/b/c.txt"), "c")
	write(t, filepath.Join(root, "a/x.txt"), "x")
	write(t, filepath.Join(root, "top.txt"), "t")
	os.Symlink(filepath.Join(root, "a"), filepath.Join(root, "link"))
	os.Symlink(root, filepath.Join(f.home, "rootlink"))

	cases := []struct {
		name  string
		path  string
		depth uint32
		want  []string // relative to the listed path
		code  connect.Code
	}{
		{name: "depth 0 is 1", path: root, depth: 0, want: []string{"a", "link", "top.txt"}},
		{name: "depth 1", path: "root", depth: 1, want: []string{"a", "link", "top.txt"}},
		{name: "depth 2", path: root, depth: 2, want: []string{"a", "a/b", "a/x.txt", "link", "top.txt"}},
		{name: "depth 3", path: root, depth: 3, want: []string{"a", "a/b", "a/b/c.txt", "a/x.txt", "link", "top.txt"}},
		{name: "huge depth", path: root, depth: 1 << 31, want: []string{"a", "a/b", "a/b/c.txt", "a/x.txt", "link", "top.txt"}},
		{name: "through a symlinked root", path: "rootlink", depth: 1, want: []string{"a", "link", "top.txt"}},
		{name: "missing", path: "nope", code: connect.CodeNotFound},
		{name: "file", path: "root/top.txt", code: connect.CodeInvalidArgument},
		{name: "empty", path: "", code: connect.CodeInvalidArgument},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := f.client.ListDir(ctx, request(&fspb.ListDirRequest{Path: c.path, Depth: c.depth}))
			wantCode(t, "ListDir", err, c.code)
			if c.code != 0 {
				return
			}
			base := c.path
			if !filepath.IsAbs(base) {
				base = filepath.Join(f.home, base)
			}
			var got []string
			for _, e := range resp.Msg.GetEntries() {
				rel, err := filepath.Rel(base, e.GetPath())
				if err != nil || !filepath.IsAbs(e.GetPath()) {
					t.Fatalf("entry path %q not absolute under %s", e.GetPath(), base)
				}
				if e.GetName() != filepath.Base(rel) {
					t.Fatalf("entry %q has name %q", rel, e.GetName())
				}
				got = append(got, rel)
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("entries %v, want %v", got, c.want)
			}
		})
	}

	resp, err := f.client.ListDir(ctx, request(&fspb.ListDirRequest{Path: root, Depth: 5}))
	wantCode(t, "ListDir", err, 0)
	for _, e := range resp.Msg.GetEntries() {
		want := fspb.FileType_FILE_TYPE_FILE
		switch e.GetName() {
		case "a", "b":
			want = fspb.FileType_FILE_TYPE_DIRECTORY
		case "link":
			want = fspb.FileType_FILE_TYPE_SYMLINK
		}
		if e.GetType() != want {
			t.Errorf("%s: type %v, want %v", e.GetPath(), e.GetType(), want)
		}
	}
}
