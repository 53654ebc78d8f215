package imagebuild

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/testlog"
)

// buildFixture is a fake kernel, busybox, envd, tool and template tree, so
// Build's caching can be tested without the real packages.
type buildFixture struct {
	opts    BuildOptions
	runs    string // the template script appends a line here per run
	script  string
	workDir string
}

func newBuildFixture(t *testing.T) *buildFixture {
	t.Helper()
	root := t.TempDir()
	f := &buildFixture{runs: filepath.Join(root, "runs"), workDir: root}
	write := func(rel, content string, mode os.FileMode) string {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const kv = "6.1.0-1-cloud-amd64"
	write("boot/vmlinuz-"+kv, "kernel image", 0o644)
	write("modules/"+kv+"/modules.dep", "kernel/lib/extra.ko:\n", 0o644)
	write("modules/"+kv+"/kernel/lib/extra.ko", "ELF", 0o644)
	var builtin strings.Builder
	for _, m := range DefaultModules {
		builtin.WriteString("kernel/" + m + ".ko\n")
	}
	write("modules/"+kv+"/modules.builtin", builtin.String(), 0o644)
	busybox := write("bin/busybox", "#!/bin/sh\necho bin/sh\necho sbin/insmod\n", 0o755)
	envd := write("envd", "envd v1", 0o755)
	tool := write("tool", "tool v1", 0o755)
	f.script = write("images/templates/t1/build.sh", `set -eu
echo run >> "`+f.runs+`"
test -x "$WRENN_IMAGE_TOOL"
test -d "$WRENN_WORK"
test -z "${WRENN_ENVD:-}"
mkdir -p "$WRENN_ROOT/etc" "$WRENN_ROOT/bin"
echo "root:x:0:0:root:/root:/bin/sh" > "$WRENN_ROOT/etc/passwd"
echo "root:x:0:" > "$WRENN_ROOT/etc/group"
echo "python3.11 3.11.2-6" > "$WRENN_PACKAGES_OUT"
printf 'size_mib=32\nshell=/bin/bash\nuser_groups=wheel\n' > "$WRENN_FINISH_OUT"
`, 0o755)
	write("images/templates/t1/VERSION", "3\n", 0o644)
	write("images/templates/lib.sh", "# shared\n", 0o644)
	f.opts = BuildOptions{
		OutDir:      filepath.Join(root, "out"),
		ImagesDir:   filepath.Join(root, "images"),
		Envd:        envd,
		Templates:   []string{"t1"},
		KernelPaths: KernelPaths{BootDir: filepath.Join(root, "boot"), ModulesDir: filepath.Join(root, "modules")},
		Busybox:     busybox,
		Tool:        tool,
		Log:         slog.New(slog.NewTextHandler(testlog.Writer(t), nil)),
		Now:         func() time.Time { return time.Date(2025, 5, 20, 12, 0, 0, 0, time.UTC) },
	}
	return f
}

func (f *buildFixture) scriptRuns(t *testing.T) int {
	data, err := os.ReadFile(f.runs)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), "run")
}

// requireMkfs skips when e2fsprogs is missing.
func requireMkfs(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (apt-get install e2fsprogs)", tool)
		}
	}
}

// imageFile reads a file out of an ext4 image with debugfs (no mount).
func imageFile(t *testing.T, image, path string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", "cat "+path, image).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", path, err)
	}
	return string(out)
}

func TestBuildCache(t *testing.T) {
	requireMkfs(t)
	f := newBuildFixture(t)
	ctx := context.Background()

	rep, err := Build(ctx, f.opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep.KernelHit || len(rep.Templates) != 1 || rep.Templates[0].Hit {
		t.Fatalf("first build reported cache hits: %+v", rep)
	}
	m := rep.Templates[0].Manifest
	rootfs := filepath.Join(f.opts.OutDir, "templates/t1/rootfs.ext4")
	sum, err := FileSHA256(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "t1" || m.Version != "3" || m.KernelVersion != "6.1.0-1-cloud-amd64" || m.SHA256 != sum ||
		m.Packages["python3.11"] != "3.11.2-6" || !m.BuiltAt.Equal(f.opts.Now()) {
		t.Fatalf("manifest %+v (rootfs sha %s)", m, sum)
	}
	var onDisk Manifest
	if err := readJSON(filepath.Join(f.opts.OutDir, "templates/t1/manifest.json"), &onDisk); err != nil {
		t.Fatal(err)
	}
	if onDisk.CacheKey != m.CacheKey || onDisk.SHA256 != m.SHA256 {
		t.Fatalf("manifest on disk %+v differs from report %+v", onDisk, m)
	}
	for _, p := range []string{"kernel/vmlinuz-6.1.0-1-cloud-amd64", "kernel/initramfs-6.1.0-1-cloud-amd64.img", "kernel/manifest.json"} {
		if _, err := os.Stat(filepath.Join(f.opts.OutDir, p)); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(rep.Kernel.Modules, ","); got != "" {
		t.Fatalf("all default modules are built in, yet the initramfs loads %q", got)
	}
	if _, err := os.Stat(filepath.Join(f.opts.OutDir, ".work/t1")); !os.IsNotExist(err) {
		t.Fatalf("work dir left behind: %v", err)
	}
	if m.SizeBytes != 32<<20 {
		t.Fatalf("image is %d bytes; the template asked for 32 MiB", m.SizeBytes)
	}
	if got := imageFile(t, rootfs, "/usr/local/bin/envd"); got != "envd v1" {
		t.Fatalf("envd in image: %q", got)
	}
	if got := imageFile(t, rootfs, "/etc/passwd"); !strings.Contains(got, "user:x:1000:1000::/home/user:/bin/bash") {
		t.Fatalf("passwd in image:\n%s", got)
	}
	if got := imageFile(t, rootfs, "/etc/group"); !strings.Contains(got, "wheel:x:900:user") {
		t.Fatalf("group in image:\n%s", got)
	}

	steps := []struct {
		name       string
		change     func()
		kernelHit  bool
		templHit   bool
		scriptRuns int
	}{
		{"unchanged", func() {}, true, true, 1},
		// A new envd reuses the cached base tree: no script run.
		{"envd changed", func() { os.WriteFile(f.opts.Envd, []byte("envd v2"), 0o755) }, true, false, 1},
		{"script changed", func() { os.WriteFile(f.script, append(mustRead(t, f.script), "# edit\n"...), 0o755) }, true, false, 2},
		// The fixture script calls the tool, so its base tree depends on it.
		{"tool changed", func() { os.WriteFile(f.opts.Tool, []byte("tool v2"), 0o755) }, false, false, 3},
		// A script that does not call the tool: a new tool re-finishes the
		// image without re-running the script.
		{"tool-free script", func() {
			os.WriteFile(f.script, []byte(strings.ReplaceAll(string(mustRead(t, f.script)), `test -x "$WRENN_IMAGE_TOOL"`, "true")), 0o755)
		}, true, false, 4},
		{"tool changed again", func() { os.WriteFile(f.opts.Tool, []byte("tool v3"), 0o755) }, false, false, 4},
		{"rootfs deleted", func() { os.Remove(rootfs) }, true, false, 4},
		{"base tree deleted", func() { os.Remove(rootfs); os.RemoveAll(filepath.Join(f.opts.OutDir, ".cache/t1/root")) }, true, false, 5},
		{"forced", func() { f.opts.Force = true }, false, false, 6},
	}
	for _, s := range steps {
		s.change()
		rep, err := Build(ctx, f.opts)
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if rep.KernelHit != s.kernelHit || rep.Templates[0].Hit != s.templHit || f.scriptRuns(t) != s.scriptRuns {
			t.Fatalf("%s: kernel hit %v template hit %v script runs %d; want %v %v %d",
				s.name, rep.KernelHit, rep.Templates[0].Hit, f.scriptRuns(t), s.kernelHit, s.templHit, s.scriptRuns)
		}
		if got := imageFile(t, rootfs, "/usr/local/bin/envd"); got != "envd v2" && s.name != "unchanged" {
			t.Fatalf("%s: envd in image %q", s.name, got)
		}
	}
}

func TestBuildTemplateFailure(t *testing.T) {
	f := newBuildFixture(t)
	if err := os.WriteFile(f.script, []byte("mkdir -p \"$WRENN_ROOT/etc\"; exit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(context.Background(), f.opts); err == nil {
		t.Fatal("failing template script did not fail the build")
	}
	dir := filepath.Join(f.opts.OutDir, "templates/t1")
	for _, n := range []string{"rootfs.ext4", "rootfs.ext4.building", "manifest.json", "../../.cache/t1/root", "../../.cache/t1/base.key"} {
		if _, err := os.Stat(filepath.Join(dir, n)); !os.IsNotExist(err) {
			t.Errorf("%s left after a failed build: %v", n, err)
		}
	}
}

func TestBuildRejectsBadTemplateName(t *testing.T) {
	f := newBuildFixture(t)
	for _, name := range []string{"../t1", "t1/x", "nosuch"} {
		f.opts.Templates = []string{name}
		if _, err := Build(context.Background(), f.opts); err == nil {
			t.Errorf("template %q accepted", name)
		}
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
