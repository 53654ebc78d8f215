package initsys

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseCmdline(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Cmdline
	}{
		{name: "empty", in: "", want: nil},
		{name: "whitespace only", in: " \t\n", want: nil},
		{
			name: "typical firecracker",
			in:   "console=ttyS0 reboot=k panic=1 pci=off ip=169.254.0.21::169.254.0.22:255.255.255.252::eth0:off wrenn.hostname=sbx1\n",
			want: Cmdline{
				{Key: "console", Value: "ttyS0", HasValue: true},
				{Key: "reboot", Value: "k", HasValue: true},
				{Key: "panic", Value: "1", HasValue: true},
				{Key: "pci", Value: "off", HasValue: true},
				{Key: "ip", Value: "169.254.0.21::169.254.0.22:255.255.255.252::eth0:off", HasValue: true},
				{Key: "wrenn.hostname", Value: "sbx1", HasValue: true},
			},
		},
		{
			name: "bare words and empty values",
			in:   "ro  quiet x=",
			want: Cmdline{{Key: "ro"}, {Key: "quiet"}, {Key: "x", Value: "", HasValue: true}},
		},
		{
			name: "quoted value with spaces",
			in:   `a="b c" "d=e f" g=h`,
			want: Cmdline{
				{Key: "a", Value: "b c", HasValue: true},
				{Key: "d", Value: "e f", HasValue: true},
				{Key: "g", Value: "h", HasValue: true},
			},
		},
		{
			name: "value containing equals",
			in:   "init=/sbin/envd root=PARTUUID=abc=1",
			want: Cmdline{
				{Key: "init", Value: "/sbin/envd", HasValue: true},
				{Key: "root", Value: "PARTUUID=abc=1", HasValue: true},
			},
		},
		{
			name: "init arguments after double dash",
			in:   "quiet -- wrenn.dns=1.1.1.1 --init",
			want: Cmdline{
				{Key: "quiet"},
				{Key: "wrenn.dns", Value: "1.1.1.1", HasValue: true},
				{Key: "--init"},
			},
		},
		{
			name: "unterminated quote runs to the end",
			in:   `a="b c`,
			want: Cmdline{{Key: "a", Value: "b c", HasValue: true}},
		},
		{
			name: "empty quoted value",
			in:   `a="" b`,
			want: Cmdline{{Key: "a", Value: "", HasValue: true}, {Key: "b"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseCmdline(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseCmdline(%q) =\n%#v\nwant\n%#v", tt.in, got, tt.want)
			}
		})
	}
}

func TestCmdlineLookupLastWins(t *testing.T) {
	cl := ParseCmdline("wrenn.hostname=a x wrenn.hostname=b")
	if v, ok := cl.Lookup("wrenn.hostname"); !ok || v != "b" {
		t.Fatalf("Lookup = %q, %v; want b, true", v, ok)
	}
	if _, ok := cl.Lookup("missing"); ok {
		t.Fatal("Lookup of a missing key succeeded")
	}
	if v, ok := cl.Lookup("x"); !ok || v != "" {
		t.Fatalf("bare word Lookup = %q, %v", v, ok)
	}
}

func TestHostnameFrom(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "quiet", want: DefaultHostname},
		{in: "wrenn.hostname=", want: DefaultHostname},
		{in: "wrenn.hostname=isb-7f3a", want: "isb-7f3a"},
		{in: "wrenn.hostname=a/b", want: DefaultHostname, wantErr: true},
		{in: "wrenn.hostname=" + strings.Repeat("x", 65), want: DefaultHostname, wantErr: true},
	}
	for _, tt := range tests {
		got, err := hostnameFrom(ParseCmdline(tt.in))
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("hostnameFrom(%q) = %q, %v; want %q, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func FuzzParseCmdline(f *testing.F) {
	f.Add(`console=ttyS0 a="b c" -- x`)
	f.Fuzz(func(t *testing.T, s string) {
		for _, p := range ParseCmdline(s) {
			if strings.ContainsAny(p.Key, "\" \t\n") && !strings.Contains(s, "\"") {
				t.Fatalf("key %q keeps a separator", p.Key)
			}
			if !p.HasValue && p.Value != "" {
				t.Fatalf("value without '=': %+v", p)
			}
		}
	})
}
