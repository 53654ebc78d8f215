package imagebuild

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Manifest describes one built template (templates/<name>/manifest.json).
type Manifest struct {
	Name          string            `json:"name"`
	Version       string            `json:"version"`
	KernelVersion string            `json:"kernel_version"`
	File          string            `json:"file"`
	SizeBytes     int64             `json:"size_bytes"`
	SHA256        string            `json:"sha256"`
	BuiltAt       time.Time         `json:"built_at"`
	CacheKey      string            `json:"cache_key"`
	EnvdSHA256    string            `json:"envd_sha256"`
	Packages      map[string]string `json:"packages,omitempty"`
}

// KernelManifest describes the kernel pair (kernel/manifest.json).
type KernelManifest struct {
	KernelVersion   string    `json:"kernel_version"`
	Kernel          string    `json:"kernel"`
	KernelSHA256    string    `json:"kernel_sha256"`
	Initramfs       string    `json:"initramfs"`
	InitramfsSHA256 string    `json:"initramfs_sha256"`
	InitramfsBytes  int64     `json:"initramfs_size_bytes"`
	Modules         []string  `json:"modules"`
	Append          string    `json:"append"`
	BuiltAt         time.Time `json:"built_at"`
	CacheKey        string    `json:"cache_key"`
}

// readJSON decodes file into v; a missing file is reported as fs.ErrNotExist.
func readJSON(file string, v any) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %s: %w", file, err)
	}
	return nil
}

// writeJSON writes v to file atomically (temp file + rename).
func writeJSON(file string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", file, err)
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return fmt.Errorf("write %s: %w", file, err)
	}
	return nil
}

// FileSHA256 returns the hex SHA-256 of a file's contents.
func FileSHA256(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, bufio.NewReaderSize(f, 1<<20)); err != nil {
		return "", fmt.Errorf("hash %s: %w", file, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// cacheKey accumulates labelled inputs into one SHA-256.
type cacheKey struct {
	lines []string
}

func (k *cacheKey) add(label, value string) {
	k.lines = append(k.lines, label+"="+value)
}

// addFile adds a file's hash; a missing file is an input too.
func (k *cacheKey) addFile(label, file string) error {
	sum, err := FileSHA256(file)
	if errors.Is(err, fs.ErrNotExist) {
		k.add(label, "absent")
		return nil
	}
	if err != nil {
		return err
	}
	k.add(label, sum)
	return nil
}

// addTree adds the hash of every regular file under dir, in path order.
func (k *cacheKey) addTree(label, dir string) error {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("hash tree %s: %w", dir, err)
	}
	sort.Strings(files)
	for _, f := range files {
		rel, _ := filepath.Rel(dir, f)
		if err := k.addFile(label+":"+rel, f); err != nil {
			return err
		}
	}
	return nil
}

func (k *cacheKey) sum() string {
	h := sha256.Sum256([]byte(strings.Join(k.lines, "\n")))
	return hex.EncodeToString(h[:])
}

// HostPackageVersions returns the installed Debian version of each package
// ("" when not installed), as dpkg-query reports it.
func HostPackageVersions(ctx context.Context, pkgs ...string) map[string]string {
	out := make(map[string]string, len(pkgs))
	for _, p := range pkgs {
		var b bytes.Buffer
		cmd := exec.CommandContext(ctx, "dpkg-query", "-W", "-f=${Version}", p)
		cmd.Stdout = &b
		if err := cmd.Run(); err != nil {
			out[p] = ""
			continue
		}
		out[p] = strings.TrimSpace(b.String())
	}
	return out
}

// readPackages parses "name version" lines written by a template script.
func readPackages(file string) (map[string]string, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	pkgs := map[string]string{}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 {
			pkgs[f[0]] = f[1]
		}
	}
	return pkgs, nil
}
