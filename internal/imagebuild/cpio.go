package imagebuild

import (
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// File-type bits of a newc mode field (the same values as stat's S_IF*).
const (
	modeTypeMask = 0o170000
	modeDir      = 0o040000
	modeReg      = 0o100000
	modeSymlink  = 0o120000
	modeCharDev  = 0o020000
)

const (
	newcMagic   = "070701"
	newcTrailer = "TRAILER!!!"
	headerLen   = 110 // 6 magic + 13 fields of 8 hex digits
)

// ErrDuplicateEntry is returned when the same path is added twice with
// different contents.
var ErrDuplicateEntry = errors.New("duplicate archive entry")

// Entry is one member of a newc archive.
type Entry struct {
	Name  string // path inside the archive, without a leading slash
	Mode  uint32 // type bits and permission bits
	UID   uint32
	GID   uint32
	Data  []byte // file contents, or the target of a symlink
	Major uint32 // device number of a character device
	Minor uint32
}

// Archive collects entries and writes them as a reproducible newc ("070701")
// cpio: entries sorted by name with parents first, inode numbers assigned in
// that order, one fixed mtime, no hard links and a final TRAILER!!! record.
// Missing parent directories are added with mode 0755. The zero value is not
// usable; call NewArchive.
type Archive struct {
	mtime   uint32
	entries map[string]Entry
}

// NewArchive returns an empty archive whose entries all carry mtime (seconds
// since the epoch; 0 is fine).
func NewArchive(mtime uint32) *Archive {
	return &Archive{mtime: mtime, entries: make(map[string]Entry)}
}

// AddDir adds a directory.
func (a *Archive) AddDir(name string, perm uint32) error {
	return a.add(Entry{Name: name, Mode: modeDir | perm&0o7777})
}

// AddFile adds a regular file with the given contents.
func (a *Archive) AddFile(name string, perm uint32, data []byte) error {
	return a.add(Entry{Name: name, Mode: modeReg | perm&0o7777, Data: data})
}

// AddSymlink adds a symbolic link to target.
func (a *Archive) AddSymlink(name, target string) error {
	return a.add(Entry{Name: name, Mode: modeSymlink | 0o777, Data: []byte(target)})
}

// AddCharDev adds a character device node (for example dev/console, 5:1),
// which the kernel needs in the initramfs to give /init a console.
func (a *Archive) AddCharDev(name string, perm, major, minor uint32) error {
	return a.add(Entry{Name: name, Mode: modeCharDev | perm&0o7777, Major: major, Minor: minor})
}

func (a *Archive) add(e Entry) error {
	name, err := cleanName(e.Name)
	if err != nil {
		return err
	}
	e.Name = name
	if old, ok := a.entries[name]; ok {
		if old.Mode == e.Mode && string(old.Data) == string(e.Data) && old.Major == e.Major && old.Minor == e.Minor {
			return nil
		}
		return fmt.Errorf("add %s: %w", name, ErrDuplicateEntry)
	}
	for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
		old, ok := a.entries[dir]
		if !ok {
			a.entries[dir] = Entry{Name: dir, Mode: modeDir | 0o755}
			continue
		}
		if old.Mode&modeTypeMask != modeDir {
			return fmt.Errorf("add %s: parent %s is not a directory: %w", name, dir, ErrDuplicateEntry)
		}
	}
	a.entries[name] = e
	return nil
}

func cleanName(name string) (string, error) {
	n := path.Clean("/" + name)
	n = strings.TrimPrefix(n, "/")
	if n == "" || n == "." {
		return "", fmt.Errorf("archive entry %q: empty name", name)
	}
	if n == newcTrailer {
		return "", fmt.Errorf("archive entry %q: reserved name", name)
	}
	return n, nil
}

// Names returns the entry names in the order WriteTo writes them.
func (a *Archive) Names() []string {
	names := make([]string, 0, len(a.entries))
	for n := range a.entries {
		names = append(names, n)
	}
	// Byte order of the full path puts "a" before "a/b" and keeps siblings
	// stable, so every parent precedes its children.
	sort.Strings(names)
	return names
}

// WriteTo writes the archive, trailer included, to w.
func (a *Archive) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	ino := uint32(1)
	for _, name := range a.Names() {
		e := a.entries[name]
		if err := writeRecord(cw, e, ino, a.mtime); err != nil {
			return cw.n, fmt.Errorf("write %s: %w", name, err)
		}
		ino++
	}
	if err := writeRecord(cw, Entry{Name: newcTrailer}, 0, 0); err != nil {
		return cw.n, fmt.Errorf("write trailer: %w", err)
	}
	return cw.n, nil
}

func writeRecord(w io.Writer, e Entry, ino, mtime uint32) error {
	nlink := uint32(1)
	if e.Mode&modeTypeMask == modeDir {
		nlink = 2
	}
	if e.Name == newcTrailer {
		nlink = 1
	}
	fields := [13]uint32{
		ino,
		e.Mode,
		e.UID,
		e.GID,
		nlink,
		mtime,
		uint32(len(e.Data)),
		0, 0, // device holding the file
		e.Major, e.Minor, // rdev
		uint32(len(e.Name) + 1),
		0, // check, unused by newc
	}
	var hdr strings.Builder
	hdr.Grow(headerLen + len(e.Name) + 4)
	hdr.WriteString(newcMagic)
	for _, f := range fields {
		fmt.Fprintf(&hdr, "%08X", f)
	}
	hdr.WriteString(e.Name)
	hdr.WriteByte(0)
	hdr.WriteString(pad4(headerLen + len(e.Name) + 1))
	if _, err := io.WriteString(w, hdr.String()); err != nil {
		return err
	}
	if len(e.Data) == 0 {
		return nil
	}
	if _, err := w.Write(e.Data); err != nil {
		return err
	}
	_, err := io.WriteString(w, pad4(len(e.Data)))
	return err
}

// pad4 returns the NUL bytes that bring n up to a multiple of four.
func pad4(n int) string {
	return "\x00\x00\x00"[:(4-n%4)%4]
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
