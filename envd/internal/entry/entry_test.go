package entry

import (
	"os"
	"path/filepath"
	"testing"

	fspb "github.com/wrenn-dev/envd/internal/gen/filesystem"
)

func TestInfoTypes(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	os.WriteFile(f, []byte("hello"), 0o640)
	os.Symlink("f", filepath.Join(dir, "l"))

	e, err := Info(f)
	if err != nil {
		t.Fatal(err)
	}
	if e.Type != fspb.FileType_FILE_TYPE_FILE || e.Size != 5 || e.Mode != 0o640 || e.Name != "f" || e.Path != f {
		t.Fatalf("file entry = %v", e)
	}
	if e.Permissions != "-rw-r-----" || e.Owner == "" || e.ModifiedTime == nil {
		t.Fatalf("file entry = %v", e)
	}
	l, err := Info(filepath.Join(dir, "l"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Type != fspb.FileType_FILE_TYPE_SYMLINK || l.GetSymlinkTarget() != f {
		t.Fatalf("symlink entry = %v", l)
	}
	d, _ := Info(dir)
	if d.Type != fspb.FileType_FILE_TYPE_DIRECTORY {
		t.Fatalf("dir entry = %v", d)
	}
	if _, err := Info(filepath.Join(dir, "missing")); !os.IsNotExist(err) {
		t.Fatalf("missing: %v", err)
	}
}

func TestMetadataRoundTrip(t *testing.T) {
	f := filepath.Join(t.TempDir(), "m")
	os.WriteFile(f, nil, 0o644)
	if err := ReplaceMetadata(f, map[string]string{"a": "1", "b": "two"}); err != nil {
		if err == ErrXattrUnsupported {
			t.Skip("temp dir filesystem has no user xattrs")
		}
		t.Fatal(err)
	}
	if err := ReplaceMetadata(f, map[string]string{"b": "three"}); err != nil {
		t.Fatal(err)
	}
	md := ReadMetadata(f)
	if len(md) != 1 || md["b"] != "three" {
		t.Fatalf("metadata = %v", md)
	}
}
