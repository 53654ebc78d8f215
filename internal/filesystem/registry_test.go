package filesystem

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func writeJSONFile(t *testing.T, path string, v any) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeTemplate writes a template build (manifest plus a rootfs of size
// bytes) in dir.
func fakeTemplate(t *testing.T, dir, name, version string, size int64) {
	t.Helper()
	writeJSONFile(t, filepath.Join(dir, "manifest.json"), TemplateManifest{
		Name: name, Version: version, File: "rootfs.ext4", SizeBytes: size, SHA256: strings.Repeat(version, 64)[:64],
	})
	f, err := os.Create(filepath.Join(dir, "rootfs.ext4"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// fakeRegistry lays out what images/build.sh writes, with two versions of
// "alpha" (the current one in the template directory, an older one kept
// below it) and one of "beta".
func fakeRegistry(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	k := filepath.Join(root, "kernel")
	writeJSONFile(t, filepath.Join(k, "manifest.json"), KernelManifest{
		KernelVersion: "6.1.0-test", Kernel: "vmlinuz-test", Initramfs: "initramfs-test.img",
		KernelSHA256: "k", InitramfsSHA256: "i", Append: "console=ttyS0",
	})
	for _, f := range []string{"vmlinuz-test", "initramfs-test.img"} {
		if err := os.WriteFile(filepath.Join(k, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fakeTemplate(t, filepath.Join(root, "templates", "alpha"), "alpha", "10", 4096)
	fakeTemplate(t, filepath.Join(root, "templates", "alpha", "v9"), "alpha", "9", 8192)
	fakeTemplate(t, filepath.Join(root, "templates", "beta"), "beta", "1", 4096)
	// Not templates: a manifest naming another template, a stray file,
	// a directory without a manifest.
	fakeTemplate(t, filepath.Join(root, "templates", "gamma"), "delta", "1", 4096)
	if err := os.WriteFile(filepath.Join(root, "templates", "README"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "templates", "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestRegistryResolve(t *testing.T) {
	root := fakeRegistry(t)
	r, err := NewRegistry(root)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, template, version string
		wantVersion, wantDir    string
		wantErr                 error
		wantMsg                 string
	}{
		{name: "newest by default", template: "alpha", wantVersion: "10", wantDir: "templates/alpha"},
		{name: "older version", template: "alpha", version: "9", wantVersion: "9", wantDir: "templates/alpha/v9"},
		{name: "other template", template: "beta", version: "1", wantVersion: "1", wantDir: "templates/beta"},
		{name: "unknown template", template: "nope", wantErr: ErrNotFound, wantMsg: `template "nope" not found (have alpha, beta)`},
		{name: "unknown version", template: "alpha", version: "3", wantErr: ErrNotFound, wantMsg: `has no version "3" (have 10, 9)`},
		{name: "manifest names another template", template: "gamma", wantErr: ErrNotFound},
		{name: "path in the name", template: "../kernel", wantErr: ErrInvalidName},
		{name: "upper case", template: "Alpha", wantErr: ErrInvalidName},
		{name: "empty", template: "", wantErr: ErrInvalidName},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			im, err := r.Resolve(tc.template, tc.version)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg) {
					t.Fatalf("err %v, want %v mentioning %q", err, tc.wantErr, tc.wantMsg)
				}
				if errors.Is(tc.wantErr, ErrNotFound) {
					var nf *NotFoundError
					if !errors.As(err, &nf) || nf.Template != tc.template {
						t.Errorf("err %T %v is not a *NotFoundError for %q", err, err, tc.template)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if im.Version != tc.wantVersion || im.Dir != filepath.Join(root, tc.wantDir) ||
				im.Rootfs != filepath.Join(root, tc.wantDir, "rootfs.ext4") || im.Template != tc.template {
				t.Errorf("resolved %+v", im)
			}
			if im.Kernel.Image != filepath.Join(root, "kernel", "vmlinuz-test") ||
				im.Kernel.Initrd != filepath.Join(root, "kernel", "initramfs-test.img") || im.Kernel.Version != "6.1.0-test" {
				t.Errorf("kernel %+v", im.Kernel)
			}
		})
	}
	list, err := r.Templates()
	if err != nil {
		t.Fatal(err)
	}
	want := []TemplateInfo{{Name: "alpha", Versions: []string{"10", "9"}}, {Name: "beta", Versions: []string{"1"}}}
	if !slices.EqualFunc(list, want, func(a, b TemplateInfo) bool { return a.Name == b.Name && slices.Equal(a.Versions, b.Versions) }) {
		t.Errorf("templates %+v, want %+v", list, want)
	}
}

func TestRegistryMissingFiles(t *testing.T) {
	tests := []struct {
		name    string
		break_  func(t *testing.T, root string)
		wantMsg string
	}{
		{"rootfs deleted", func(t *testing.T, root string) {
			os.Remove(filepath.Join(root, "templates", "alpha", "rootfs.ext4"))
		}, "rootfs of template alpha"},
		{"rootfs of the wrong size", func(t *testing.T, root string) {
			os.Truncate(filepath.Join(root, "templates", "alpha", "rootfs.ext4"), 100)
		}, "is 100 bytes, its manifest says 4096"},
		{"kernel deleted", func(t *testing.T, root string) {
			os.Remove(filepath.Join(root, "kernel", "vmlinuz-test"))
		}, "vmlinuz-test"},
		{"initramfs deleted", func(t *testing.T, root string) {
			os.Remove(filepath.Join(root, "kernel", "initramfs-test.img"))
		}, "initramfs-test.img"},
		{"no kernel manifest", func(t *testing.T, root string) {
			os.Remove(filepath.Join(root, "kernel", "manifest.json"))
		}, "kernel"},
		{"manifest escapes its directory", func(t *testing.T, root string) {
			writeJSONFile(t, filepath.Join(root, "templates", "alpha", "manifest.json"),
				TemplateManifest{Name: "alpha", Version: "10", File: "../beta/rootfs.ext4"})
		}, "outside its directory"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := fakeRegistry(t)
			tc.break_(t, root)
			r, err := NewRegistry(root)
			if err != nil {
				t.Fatal(err)
			}
			_, err = r.Resolve("alpha", "10")
			if !errors.Is(err, ErrImageMissing) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err %v, want ErrImageMissing mentioning %q", err, tc.wantMsg)
			}
		})
	}
	if _, err := NewRegistry(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Error("registry on a missing directory")
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"1", "1", 0}, {"2", "10", -1}, {"1.10", "1.9", 1}, {"1.2", "1.2.1", -1},
		{"1.a", "1.b", -1}, {"20260101", "9", 1},
	}
	for _, tc := range tests {
		got := compareVersions(tc.a, tc.b)
		if (got < 0) != (tc.want < 0) || (got > 0) != (tc.want > 0) {
			t.Errorf("compare(%q, %q) = %d, want sign of %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestRegistryBuiltImages reads the images builder's real output when it
// is there (images/build.sh).
func TestRegistryBuiltImages(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	out := filepath.Join(filepath.Dir(file), "..", "..", "images", "out")
	if _, err := os.Stat(filepath.Join(out, "templates", "minimal", "manifest.json")); err != nil {
		t.Skip("images/out has no minimal template (run images/build.sh)")
	}
	r, err := NewRegistry(out)
	if err != nil {
		t.Fatal(err)
	}
	im, err := r.Resolve("minimal", "")
	if err != nil {
		t.Fatal(err)
	}
	if im.Manifest.SHA256 == "" || im.Kernel.SHA256 == "" || im.Kernel.Initrd == "" {
		t.Errorf("resolved without hashes or initrd: %+v", im)
	}
	t.Logf("minimal %s: %s, kernel %s", im.Version, im.Rootfs, im.Kernel.Image)
}
