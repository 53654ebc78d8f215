package imagebuild

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// readNewc is an independent newc parser for the tests: it checks magic,
// field syntax, NUL-terminated names, 4-byte alignment and the trailer.
type parsed struct {
	Entry
	Ino, Nlink, Mtime uint32
}

func readNewc(t *testing.T, data []byte) []parsed {
	t.Helper()
	var out []parsed
	off := 0
	for {
		if off%4 != 0 {
			t.Fatalf("record at %d not 4-byte aligned", off)
		}
		if len(data)-off < headerLen {
			t.Fatalf("truncated header at %d", off)
		}
		h := data[off : off+headerLen]
		if string(h[:6]) != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		var f [13]uint32
		for i := range f {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("field %d at %d: %v", i, off, err)
			}
			f[i] = uint32(v)
		}
		nameSize, fileSize := int(f[11]), int(f[6])
		nameStart := off + headerLen
		if nameSize < 1 || nameStart+nameSize > len(data) || data[nameStart+nameSize-1] != 0 {
			t.Fatalf("bad name at %d", off)
		}
		name := string(data[nameStart : nameStart+nameSize-1])
		dataStart := nameStart + nameSize
		dataStart += (4 - dataStart%4) % 4
		if dataStart+fileSize > len(data) {
			t.Fatalf("%s: data past end", name)
		}
		if name == "TRAILER!!!" {
			if rest := data[dataStart:]; len(bytes.Trim(rest, "\x00")) != 0 {
				t.Fatalf("garbage after trailer")
			}
			return out
		}
		out = append(out, parsed{
			Entry: Entry{Name: name, Mode: f[1], UID: f[2], GID: f[3],
				Data: data[dataStart : dataStart+fileSize], Major: f[9], Minor: f[10]},
			Ino: f[0], Nlink: f[4], Mtime: f[5],
		})
		off = dataStart + fileSize
		off += (4 - off%4) % 4
	}
}

func sampleArchive(t *testing.T) *Archive {
	t.Helper()
	a := NewArchive(1234)
	steps := []error{
		a.AddFile("init", 0o755, []byte("#!/bin/sh\necho hi\n")),
		a.AddFile("/lib/modules/virtio.ko", 0o644, []byte{1, 2, 3}),
		a.AddSymlink("bin/sh", "/bin/busybox"),
		a.AddFile("bin/busybox", 0o755, []byte("busybox!")),
		a.AddCharDev("dev/console", 0o600, 5, 1),
		a.AddDir("tmp", 0o1777),
		a.AddFile("empty", 0o600, nil),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	return a
}

func TestArchiveRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	n, err := sampleArchive(t).WriteTo(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteTo returned %d, wrote %d", n, buf.Len())
	}
	got := readNewc(t, buf.Bytes())
	want := []struct {
		name  string
		mode  uint32
		data  string
		nlink uint32
		dev   [2]uint32
	}{
		{"bin", modeDir | 0o755, "", 2, [2]uint32{}},
		{"bin/busybox", modeReg | 0o755, "busybox!", 1, [2]uint32{}},
		{"bin/sh", modeSymlink | 0o777, "/bin/busybox", 1, [2]uint32{}},
		{"dev", modeDir | 0o755, "", 2, [2]uint32{}},
		{"dev/console", modeCharDev | 0o600, "", 1, [2]uint32{5, 1}},
		{"empty", modeReg | 0o600, "", 1, [2]uint32{}},
		{"init", modeReg | 0o755, "#!/bin/sh\necho hi\n", 1, [2]uint32{}},
		{"lib", modeDir | 0o755, "", 2, [2]uint32{}},
		{"lib/modules", modeDir | 0o755, "", 2, [2]uint32{}},
		{"lib/modules/virtio.ko", modeReg | 0o644, "\x01\x02\x03", 1, [2]uint32{}},
		{"tmp", modeDir | 0o1777, "", 2, [2]uint32{}},
	}
	if len(got) != len(want) {
		names := make([]string, len(got))
		for i, g := range got {
			names[i] = g.Name
		}
		t.Fatalf("got %d entries %v, want %d", len(got), names, len(want))
	}
	seenIno := map[uint32]bool{}
	for i, w := range want {
		g := got[i]
		if g.Name != w.name || g.Mode != w.mode || string(g.Data) != w.data || g.Nlink != w.nlink ||
			g.Major != w.dev[0] || g.Minor != w.dev[1] {
			t.Errorf("entry %d = {%s %o %q nlink %d dev %d:%d}, want {%s %o %q nlink %d dev %d:%d}",
				i, g.Name, g.Mode, g.Data, g.Nlink, g.Major, g.Minor, w.name, w.mode, w.data, w.nlink, w.dev[0], w.dev[1])
		}
		if g.Mtime != 1234 || g.UID != 0 || g.GID != 0 {
			t.Errorf("%s: mtime %d uid %d gid %d", g.Name, g.Mtime, g.UID, g.GID)
		}
		if g.Ino == 0 || seenIno[g.Ino] {
			t.Errorf("%s: inode %d reused or zero", g.Name, g.Ino)
		}
		seenIno[g.Ino] = true
	}
}

func TestArchiveReproducible(t *testing.T) {
	var a, b bytes.Buffer
	if _, err := sampleArchive(t).WriteTo(&a); err != nil {
		t.Fatal(err)
	}
	// Same content added in another order.
	x := NewArchive(1234)
	for _, err := range []error{
		x.AddFile("empty", 0o600, nil),
		x.AddDir("tmp", 0o1777),
		x.AddCharDev("dev/console", 0o600, 5, 1),
		x.AddFile("bin/busybox", 0o755, []byte("busybox!")),
		x.AddSymlink("bin/sh", "/bin/busybox"),
		x.AddFile("lib/modules/virtio.ko", 0o644, []byte{1, 2, 3}),
		x.AddFile("init", 0o755, []byte("#!/bin/sh\necho hi\n")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := x.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("same entries in a different order gave different archives")
	}
}

func TestArchiveAddErrors(t *testing.T) {
	tests := []struct {
		name string
		add  func(a *Archive) error
		want error // nil: must succeed
	}{
		{"same file twice", func(a *Archive) error {
			_ = a.AddFile("x", 0o644, []byte("a"))
			return a.AddFile("x", 0o644, []byte("a"))
		}, nil},
		{"different contents", func(a *Archive) error {
			_ = a.AddFile("x", 0o644, []byte("a"))
			return a.AddFile("x", 0o644, []byte("b"))
		}, ErrDuplicateEntry},
		{"file under a file", func(a *Archive) error {
			_ = a.AddFile("x", 0o644, []byte("a"))
			return a.AddFile("x/y", 0o644, nil)
		}, ErrDuplicateEntry},
		{"explicit dir after implicit", func(a *Archive) error {
			_ = a.AddFile("d/f", 0o644, nil)
			return a.AddDir("d", 0o755)
		}, nil},
		{"trailer name", func(a *Archive) error { return a.AddFile("TRAILER!!!", 0o644, nil) }, errAny},
		{"empty name", func(a *Archive) error { return a.AddDir("/", 0o755) }, errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.add(NewArchive(0))
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("unexpected error %v", err)
			case tt.want == errAny && err == nil, tt.want != nil && tt.want != errAny && !errors.Is(err, tt.want):
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestArchiveNameNormalised(t *testing.T) {
	a := NewArchive(0)
	if err := a.AddFile("/a/./b/../c", 0o644, nil); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(a.Names(), " "); got != "a a/c" {
		t.Fatalf("names %q", got)
	}
}

// TestArchiveBusyboxCpio lets an independent implementation (busybox cpio)
// list the archive, when busybox is installed.
func TestArchiveBusyboxCpio(t *testing.T) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox not installed (apt-get install busybox-static)")
	}
	var buf bytes.Buffer
	if _, err := sampleArchive(t).WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bb, "cpio", "-t")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("busybox cpio -t: %v: %s", err, out)
	}
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !strings.Contains(l, "blocks") {
			names = append(names, l)
		}
	}
	want := "bin bin/busybox bin/sh dev dev/console empty init lib lib/modules lib/modules/virtio.ko tmp"
	if got := strings.Join(names, " "); got != want {
		t.Fatalf("busybox cpio lists %q, want %q", got, want)
	}
}

func FuzzArchiveRoundTrip(f *testing.F) {
	f.Add("a/b/c", []byte("data"), "x")
	f.Add("weird name", []byte{}, "y/z")
	f.Fuzz(func(t *testing.T, name string, data []byte, link string) {
		if strings.ContainsRune(name, 0) || strings.ContainsRune(link, 0) {
			return
		}
		a := NewArchive(0)
		if err := a.AddFile(name, 0o644, data); err != nil {
			return
		}
		_ = a.AddSymlink(link, name)
		var buf bytes.Buffer
		if _, err := a.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		got := readNewc(t, buf.Bytes())
		if len(got) != len(a.Names()) {
			t.Fatal(fmt.Sprintf("parsed %d entries, archive has %d", len(got), len(a.Names())))
		}
		for i, n := range a.Names() {
			if got[i].Name != n || !bytes.Equal(got[i].Data, a.entries[n].Data) {
				t.Fatalf("entry %d: %q != %q", i, got[i].Name, n)
			}
		}
	})
}
