package fakefc_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fakefc"
)

func TestParseConnect(t *testing.T) {
	cases := []struct {
		in   string
		port uint32
		ok   bool
	}{
		{"CONNECT 49983", 49983, true},
		{"connect 52", 52, true},
		{"CoNnEcT 0", 0, true},
		{"CONNECT 4294967295", 4294967295, true},
		{"CONNECT 4294967296", 0, false},
		{"CONNECT", 0, false},
		{"CONNECT ", 0, false},
		{"CONNECT -1", 0, false},
		{"CONNECT +1", 0, false},
		{"CONNECT 1 2", 0, false},
		{"CONNECT  1", 0, false},
		{"CONNECTX 1", 0, false},
		{"OK 1", 0, false},
	}
	for _, tc := range cases {
		p, err := fakefc.ParseConnect(tc.in)
		if (err == nil) != tc.ok || p != tc.port {
			t.Errorf("ParseConnect(%q) = %d, %v", tc.in, p, err)
		}
	}
}

func FuzzParseConnect(f *testing.F) {
	for _, s := range []string{"CONNECT 49983", "connect 1", "CONNECT", "CONNECT 99999999999", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := fakefc.ParseConnect(s)
		if err != nil {
			return
		}
		word, num, _ := strings.Cut(s, " ")
		if !strings.EqualFold(word, "connect") {
			t.Fatalf("accepted %q", s)
		}
		if n, err := strconv.ParseUint(num, 10, 32); err != nil || uint32(n) != p {
			t.Fatalf("%q parsed as %d", s, p)
		}
	})
}
