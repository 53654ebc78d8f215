package network

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

func TestParseKernelIP(t *testing.T) {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	tests := []struct {
		name    string
		in      string
		want    Config
		wantErr error // nil: success; ErrNotStatic: exactly that; errAny: some error
	}{
		{
			name: "firecracker form",
			in:   "169.254.0.21::169.254.0.22:255.255.255.252::eth0:off",
			want: Config{Device: "eth0", Addr: p("169.254.0.21/30"), Gateway: a("169.254.0.22")},
		},
		{
			name: "full form with dns and hostname",
			in:   "10.0.2.15:10.0.2.2:10.0.2.2:255.255.255.0:box:eth1:none:10.0.2.3:1.1.1.1:10.0.2.4",
			want: Config{Device: "eth1", Addr: p("10.0.2.15/24"), Gateway: a("10.0.2.2"), Hostname: "box",
				DNS: []netip.Addr{a("10.0.2.3"), a("1.1.1.1")}},
		},
		{
			name: "prefix length netmask and default device",
			in:   "192.168.7.2::192.168.7.1:24",
			want: Config{Device: "eth0", Addr: p("192.168.7.2/24"), Gateway: a("192.168.7.1")},
		},
		{
			name: "slash prefix, no gateway",
			in:   "192.168.7.2:::/28::eth0:off",
			want: Config{Device: "eth0", Addr: p("192.168.7.2/28")},
		},
		{
			name: "classful default mask A",
			in:   "10.1.2.3",
			want: Config{Device: "eth0", Addr: p("10.1.2.3/8")},
		},
		{
			name: "classful default mask B",
			in:   "172.16.0.9::172.16.0.1",
			want: Config{Device: "eth0", Addr: p("172.16.0.9/16"), Gateway: a("172.16.0.1")},
		},
		{
			name: "classful default mask C, spaces trimmed",
			in:   " 192.0.2.10 :: 192.0.2.1 ",
			want: Config{Device: "eth0", Addr: p("192.0.2.10/24"), Gateway: a("192.0.2.1")},
		},
		{name: "host mask", in: "10.0.0.2::10.0.0.1:255.255.255.255::eth0:off",
			want: Config{Device: "eth0", Addr: p("10.0.0.2/32"), Gateway: a("10.0.0.1")}},
		{name: "off", in: "off", wantErr: ErrNotStatic},
		{name: "dhcp", in: "dhcp", wantErr: ErrNotStatic},
		{name: "empty", in: "", wantErr: ErrNotStatic},
		{name: "no client address", in: ":::::eth0:dhcp", wantErr: ErrNotStatic},
		{name: "bad client", in: "10.0.0.300::10.0.0.1:24", wantErr: errAny},
		{name: "ipv6 client", in: "fd00::1", wantErr: errAny},
		{name: "unspecified client", in: "0.0.0.0::10.0.0.1:24", wantErr: errAny},
		{name: "non contiguous mask", in: "10.0.0.2::10.0.0.1:255.0.255.0", wantErr: errAny},
		{name: "prefix too long", in: "10.0.0.2::10.0.0.1:33", wantErr: errAny},
		{name: "garbage mask", in: "10.0.0.2::10.0.0.1:abc", wantErr: errAny},
		{name: "bad gateway", in: "10.0.0.2::gw:24", wantErr: errAny},
		{name: "gateway equals client", in: "10.0.0.2::10.0.0.2:24", wantErr: errAny},
		{name: "bad dns", in: "10.0.0.2::10.0.0.1:24::eth0:off:x", wantErr: errAny},
		{name: "device with slash", in: "10.0.0.2::10.0.0.1:24::../x:off", wantErr: errAny},
		{name: "device too long", in: "10.0.0.2::10.0.0.1:24::abcdefghijklmnop:off", wantErr: errAny},
		{name: "too many fields", in: "10.0.0.2::10.0.0.1:24::eth0:off:::::", wantErr: errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKernelIP(tt.in)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("ParseKernelIP(%q): %v", tt.in, err)
			case tt.wantErr == ErrNotStatic && !errors.Is(err, ErrNotStatic):
				t.Fatalf("ParseKernelIP(%q) err = %v, want ErrNotStatic", tt.in, err)
			case tt.wantErr == errAny && (err == nil || errors.Is(err, ErrNotStatic)):
				t.Fatalf("ParseKernelIP(%q) err = %v, want a parse error", tt.in, err)
			}
			if tt.wantErr == nil && !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseKernelIP(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestParseDNSList(t *testing.T) {
	got, err := ParseDNSList("8.8.8.8, ,2001:db8::1,::ffff:1.2.3.4")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Addr{netip.MustParseAddr("8.8.8.8"), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("1.2.3.4")}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v want %v", got, want)
	}
	if _, err := ParseDNSList("8.8.8.8,nope"); err == nil {
		t.Fatal("want error for bad entry")
	}
}

func TestBroadcast(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.2/30":    "10.0.0.3",
		"192.168.1.7/24": "192.168.1.255",
		"10.1.2.3/8":     "10.255.255.255",
	} {
		b := broadcast(netip.MustParsePrefix(in))
		if got := netip.AddrFrom4(b).String(); got != want {
			t.Errorf("broadcast(%s) = %s, want %s", in, got, want)
		}
	}
}

func FuzzParseKernelIP(f *testing.F) {
	for _, s := range []string{"169.254.0.21::169.254.0.22:255.255.255.252::eth0:off", "dhcp", "1.2.3.4:::/0", ":::::::::::"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := ParseKernelIP(s)
		if err != nil {
			return
		}
		if !cfg.Addr.Addr().Is4() || cfg.Device == "" || len(cfg.Device) > 15 {
			t.Fatalf("ParseKernelIP(%q) accepted an invalid config %+v", s, cfg)
		}
		if cfg.Gateway.IsValid() && !cfg.Gateway.Is4() {
			t.Fatalf("ParseKernelIP(%q) gateway %v not IPv4", s, cfg.Gateway)
		}
	})
}
