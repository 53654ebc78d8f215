package permissions

import (
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/wrenn-dev/envd/internal/state"
)

func TestExpandPath(t *testing.T) {
	u := &User{Name: "u", Home: "/home/u"}
	cases := []struct {
		in, workdir, want string
		bad               bool
	}{
		{in: "/etc/passwd", want: "/etc/passwd"},
		{in: "~", want: "/home/u"},
		{in: "~/a/../b", want: "/home/u/b"},
		{in: "rel/x", want: "/home/u/rel/x"},
		{in: "rel/x", workdir: "/srv", want: "/srv/rel/x"},
		{in: "/a/../../b", want: "/b"},
		{in: "", bad: true},
		{in: "a\x00b", bad: true},
	}
	for _, c := range cases {
		got, err := ExpandPath(c.in, u, c.workdir)
		if c.bad {
			if err == nil {
				t.Errorf("ExpandPath(%q) = %q, want error", c.in, got)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ExpandPath(%q, %q) = %q, %v; want %q", c.in, c.workdir, got, err, c.want)
		}
	}
}

func TestUserNameFromRequest(t *testing.T) {
	st := state.New()
	h := http.Header{}
	if n, err := UserNameFromRequest(h, st); err != nil || n != "root" {
		t.Fatalf("no header: %q %v", n, err)
	}
	h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("alice:")))
	if n, err := UserNameFromRequest(h, st); err != nil || n != "alice" {
		t.Fatalf("basic: %q %v", n, err)
	}
	h.Set("Authorization", "Basic !!!")
	if _, err := UserNameFromRequest(h, st); err == nil {
		t.Fatal("malformed header accepted")
	}
	h.Set("Authorization", "Bearer x")
	if _, err := UserNameFromRequest(h, st); err == nil {
		t.Fatal("bearer accepted")
	}
}

func TestLookup(t *testing.T) {
	u, err := Lookup("root")
	if err != nil {
		t.Fatal(err)
	}
	if u.UID != 0 || u.GID != 0 || u.Home == "" {
		t.Fatalf("root = %+v", u)
	}
	if _, err := Lookup("no-such-user-wrenn"); err == nil {
		t.Fatal("unknown user found")
	}
}

func TestEnsureDirs(t *testing.T) {
	base := t.TempDir()
	d := filepath.Join(base, "a", "b", "c")
	if err := EnsureDirs(d, uint32(os.Getuid()), uint32(os.Getgid())); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
		t.Fatalf("not created: %v", err)
	}
	f := filepath.Join(base, "file")
	os.WriteFile(f, nil, 0o644)
	if err := EnsureDirs(filepath.Join(f, "x"), 0, 0); err == nil {
		t.Fatal("dir under a file accepted")
	}
}
