package filesystem

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/wrenn-dev/wrenn-sandbox/internal/imagebuild"
)

// Errors of the registry; match them with errors.Is.
var (
	// ErrNotFound: no such template, or not in the version asked for.
	ErrNotFound = errors.New("template not found")
	// ErrInvalidName: a template name or version that cannot name a
	// directory of the registry.
	ErrInvalidName = errors.New("invalid template name")
	// ErrImageMissing: a manifest names a file that is missing or has the
	// wrong size, or the kernel is not built.
	ErrImageMissing = errors.New("image file missing")
)

// NotFoundError is the error for an unknown template or version. It
// matches ErrNotFound.
type NotFoundError struct {
	Template string
	Version  string   // "" when any version was asked for
	Known    []string // the templates the registry has, or the versions of Template
}

func (e *NotFoundError) Error() string {
	if e.Version != "" && len(e.Known) > 0 {
		return fmt.Sprintf("template %q has no version %q (have %s)", e.Template, e.Version, strings.Join(e.Known, ", "))
	}
	if len(e.Known) == 0 {
		return fmt.Sprintf("template %q not found (the registry has no templates)", e.Template)
	}
	return fmt.Sprintf("template %q not found (have %s)", e.Template, strings.Join(e.Known, ", "))
}

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// Registry layout under its root, as images/build.sh writes it:
//
//	kernel/manifest.json              the kernel and initramfs pair
//	templates/<name>/manifest.json    the current build of a template
//	templates/<name>/<dir>/manifest.json  older versions kept beside it
const (
	kernelDir    = "kernel"
	templatesDir = "templates"
	manifestFile = "manifest.json"
)

var nameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// TemplateManifest is templates/<name>[/<dir>]/manifest.json, the format
// the image builder writes.
type TemplateManifest = imagebuild.Manifest

// KernelManifest is kernel/manifest.json.
type KernelManifest = imagebuild.KernelManifest

// Kernel is the resolved kernel pair (absolute paths).
type Kernel struct {
	Version string
	Image   string // vmlinuz for QEMU
	Initrd  string // "" when the kernel needs none
	Append  string // the builder's suggested kernel command line
	SHA256  string // of Image
	// InitrdSHA256 is of Initrd.
	InitrdSHA256 string
}

// Image is a resolved template: everything needed to boot it.
type Image struct {
	Template string
	Version  string
	Rootfs   string // absolute path; clone it, never boot it in place
	Dir      string // the directory holding Rootfs and its manifest
	Manifest TemplateManifest
	Kernel   Kernel
}

// CacheKey identifies the exact bits of the image: it changes whenever the
// rootfs, the kernel or the initramfs changes, even under the same version.
func (im Image) CacheKey() string {
	return strings.Join([]string{im.Template, im.Version, short(im.Manifest.SHA256), short(im.Kernel.SHA256), short(im.Kernel.InitrdSHA256)}, "/")
}

func short(s string) string {
	if len(s) > 16 {
		return s[:16]
	}
	return s
}

// TemplateInfo lists one template and its versions, newest first.
type TemplateInfo struct {
	Name     string
	Versions []string
}

// Registry finds images under a root directory. It reads the manifests on
// every call (they are small), so a rebuild is picked up without a
// restart. Safe for concurrent use.
type Registry struct {
	root string
}

// NewRegistry returns a registry rooted at dir (the images builder's
// output directory).
func NewRegistry(dir string) (*Registry, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("image registry %s: %w", dir, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("image registry: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("image registry %s: not a directory", abs)
	}
	return &Registry{root: abs}, nil
}

// Root is the registry's directory.
func (r *Registry) Root() string { return r.root }

// Kernel resolves kernel/manifest.json.
func (r *Registry) Kernel() (Kernel, error) {
	dir := filepath.Join(r.root, kernelDir)
	var m KernelManifest
	if err := readManifest(filepath.Join(dir, manifestFile), &m); err != nil {
		return Kernel{}, fmt.Errorf("%w: kernel: %w", ErrImageMissing, err)
	}
	if m.Kernel == "" {
		return Kernel{}, fmt.Errorf("%w: kernel manifest in %s names no kernel", ErrImageMissing, dir)
	}
	k := Kernel{Version: m.KernelVersion, Append: m.Append, SHA256: m.KernelSHA256, InitrdSHA256: m.InitramfsSHA256}
	var err error
	if k.Image, err = inside(dir, m.Kernel); err != nil {
		return Kernel{}, err
	}
	if err := checkFile("kernel", k.Image, -1); err != nil {
		return Kernel{}, err
	}
	if m.Initramfs != "" {
		if k.Initrd, err = inside(dir, m.Initramfs); err != nil {
			return Kernel{}, err
		}
		if err := checkFile("initramfs", k.Initrd, -1); err != nil {
			return Kernel{}, err
		}
	}
	return k, nil
}

// Templates lists the templates with a readable manifest, by name.
func (r *Registry) Templates() ([]TemplateInfo, error) {
	ents, err := os.ReadDir(filepath.Join(r.root, templatesDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	var out []TemplateInfo
	for _, e := range ents {
		if !e.IsDir() || !nameRe.MatchString(e.Name()) {
			continue
		}
		builds := r.builds(e.Name())
		if len(builds) == 0 {
			continue
		}
		ti := TemplateInfo{Name: e.Name()}
		for _, b := range builds {
			ti.Versions = append(ti.Versions, b.m.Version)
		}
		out = append(out, ti)
	}
	return out, nil
}

// build is one manifest found for a template.
type build struct {
	dir string
	m   TemplateManifest
}

// builds returns a template's builds, newest version first. Unreadable
// manifests and manifests naming another template are skipped.
func (r *Registry) builds(name string) []build {
	base := filepath.Join(r.root, templatesDir, name)
	dirs := []string{base}
	if ents, err := os.ReadDir(base); err == nil {
		for _, e := range ents {
			if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
				dirs = append(dirs, filepath.Join(base, e.Name()))
			}
		}
	}
	var out []build
	seen := map[string]bool{}
	for _, d := range dirs {
		var m TemplateManifest
		if readManifest(filepath.Join(d, manifestFile), &m) != nil || m.Name != name || m.Version == "" || seen[m.Version] {
			continue
		}
		seen[m.Version] = true
		out = append(out, build{dir: d, m: m})
	}
	slices.SortFunc(out, func(a, b build) int { return -compareVersions(a.m.Version, b.m.Version) })
	return out
}

// Resolve finds a template's image: the newest version when version is "",
// else exactly that version. Unknown names and versions give a
// *NotFoundError; a manifest whose files are missing gives ErrImageMissing.
func (r *Registry) Resolve(name, version string) (Image, error) {
	if !nameRe.MatchString(name) {
		return Image{}, fmt.Errorf("%w: %q (lower-case letters, digits, . _ -)", ErrInvalidName, name)
	}
	builds := r.builds(name)
	if len(builds) == 0 {
		known, _ := r.Templates()
		nf := &NotFoundError{Template: name}
		for _, t := range known {
			nf.Known = append(nf.Known, t.Name)
		}
		return Image{}, nf
	}
	var b *build
	for i := range builds {
		if version == "" || builds[i].m.Version == version {
			b = &builds[i]
			break
		}
	}
	if b == nil {
		nf := &NotFoundError{Template: name, Version: version}
		for _, x := range builds {
			nf.Known = append(nf.Known, x.m.Version)
		}
		return Image{}, nf
	}
	file := b.m.File
	if file == "" {
		file = "rootfs.ext4"
	}
	rootfs, err := inside(b.dir, file)
	if err != nil {
		return Image{}, err
	}
	if err := checkFile("rootfs of template "+name, rootfs, b.m.SizeBytes); err != nil {
		return Image{}, err
	}
	k, err := r.Kernel()
	if err != nil {
		return Image{}, fmt.Errorf("template %s: %w", name, err)
	}
	return Image{Template: name, Version: b.m.Version, Rootfs: rootfs, Dir: b.dir, Manifest: b.m, Kernel: k}, nil
}

func readManifest(file string, v any) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %s: %w", file, err)
	}
	return nil
}

// inside joins a manifest's file name to its directory, refusing names
// that would leave it.
func inside(dir, name string) (string, error) {
	if name == "" || filepath.IsAbs(name) || name != filepath.Clean(name) || strings.HasPrefix(name, "..") {
		return "", fmt.Errorf("%w: manifest in %s names file %q outside its directory", ErrImageMissing, dir, name)
	}
	return filepath.Join(dir, name), nil
}

// checkFile fails with ErrImageMissing unless path is a regular file of
// size bytes (size < 0: any size).
func checkFile(what, path string, size int64) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrImageMissing, what, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%w: %s %s is not a regular file", ErrImageMissing, what, path)
	}
	if size > 0 && st.Size() != size {
		return fmt.Errorf("%w: %s %s is %d bytes, its manifest says %d (rebuild in progress?)", ErrImageMissing, what, path, st.Size(), size)
	}
	return nil
}

// compareVersions orders versions by their dot-separated parts, numerically
// where both parts are numbers ("10" > "9"), else as strings.
func compareVersions(a, b string) int {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		na, ea := strconv.ParseUint(pa[i], 10, 64)
		nb, eb := strconv.ParseUint(pb[i], 10, 64)
		switch {
		case ea == nil && eb == nil && na != nb:
			if na < nb {
				return -1
			}
			return 1
		case (ea != nil || eb != nil) && pa[i] != pb[i]:
			return strings.Compare(pa[i], pb[i])
		}
	}
	return len(pa) - len(pb)
}
