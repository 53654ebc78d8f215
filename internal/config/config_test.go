package config

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

func baseEnv() map[string]string {
	return map[string]string{
		"AGENT_TLS_CA": "/c/ca.pem", "AGENT_TLS_CERT": "/c/s.pem", "AGENT_TLS_KEY": "/c/s-key.pem",
	}
}

func TestLoadAgentDefaults(t *testing.T) {
	a, err := LoadAgent(MapEnv(baseEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if a.ListenAddr != ":50051" || a.VMM != VMMAuto || a.QEMUAccel != "auto" ||
		a.NetworkPool.String() != "10.0.0.0/16" || a.DefaultMemoryMB != 512 ||
		a.TemplateSnapshots != TemplateSnapshotsLazy || a.BootTimeout != 60*time.Second ||
		a.VCPUOvercommit != 4 || a.SandboxesPath != "/var/lib/wrenn/sandboxes" {
		t.Fatalf("defaults: %+v", a)
	}
}

func TestLoadAgent(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string
		check   func(Agent) bool
	}{
		{"qemu tcg", map[string]string{"AGENT_VMM": "QEMU", "AGENT_QEMU_ACCEL": "tcg"}, "",
			func(a Agent) bool { return a.VMM == VMMQEMU && a.QEMUAccel == "tcg" }},
		{"bad vmm", map[string]string{"AGENT_VMM": "xen"}, "AGENT_VMM", nil},
		{"bad accel", map[string]string{"AGENT_QEMU_ACCEL": "hvf"}, "AGENT_QEMU_ACCEL", nil},
		{"pool", map[string]string{"AGENT_NETWORK_POOL": "10.9.0.7/24"}, "",
			func(a Agent) bool { return a.NetworkPool.String() == "10.9.0.0/24" }},
		{"pool v6", map[string]string{"AGENT_NETWORK_POOL": "fd00::/64"}, "AGENT_NETWORK_POOL", nil},
		{"pool too small", map[string]string{"AGENT_NETWORK_POOL": "10.0.0.0/31"}, "at least one /30", nil},
		{"totals", map[string]string{"AGENT_TOTAL_VCPUS": "8", "AGENT_TOTAL_MEMORY_MB": "4096"}, "",
			func(a Agent) bool { return a.TotalVCPUs == 8 && a.TotalMemoryMB == 4096 }},
		{"negative", map[string]string{"AGENT_TOTAL_VCPUS": "-1"}, "AGENT_TOTAL_VCPUS", nil},
		{"duration", map[string]string{"AGENT_BOOT_TIMEOUT": "90s"}, "",
			func(a Agent) bool { return a.BootTimeout == 90*time.Second }},
		{"bad duration", map[string]string{"AGENT_BOOT_TIMEOUT": "soon"}, "AGENT_BOOT_TIMEOUT", nil},
		{"dns list", map[string]string{"AGENT_DNS": " 1.1.1.1, ,9.9.9.9"}, "",
			func(a Agent) bool { return len(a.DNSServers) == 2 && a.DNSServers[1] == "9.9.9.9" }},
		{"no tls", map[string]string{"AGENT_TLS_CA": " "}, "AGENT_TLS_CA", nil},
		{"relative path", map[string]string{"AGENT_SANDBOXES_PATH": "sb"}, "AGENT_SANDBOXES_PATH", nil},
		{"snapshots off", map[string]string{"AGENT_TEMPLATE_SNAPSHOTS": "off"}, "",
			func(a Agent) bool { return a.TemplateSnapshots == TemplateSnapshotsOff }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := baseEnv()
			for k, v := range tt.env {
				env[k] = v
			}
			a, err := LoadAgent(MapEnv(env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one mentioning %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(a) {
				t.Fatalf("unexpected config %+v", a)
			}
		})
	}
}

// TestDevCertsMTLS makes dev certs and checks a real TLS handshake: the
// dev client is accepted, a client from another CA and a client without a
// certificate are refused.
func TestDevCertsMTLS(t *testing.T) {
	dir := t.TempDir()
	dc, err := WriteDevCerts(dir, []string{"agent.test"})
	if err != nil {
		t.Fatal(err)
	}
	// A second run keeps the CA.
	ca1, _ := LoadCA(dc.Server.CA, dir+"/"+DevCAKeyFile)
	if _, err := WriteDevCerts(dir, nil); err != nil {
		t.Fatal(err)
	}
	ca2, _ := LoadCA(dc.Server.CA, dir+"/"+DevCAKeyFile)
	if !ca1.Cert.Equal(ca2.Cert) {
		t.Fatal("WriteDevCerts replaced an existing CA")
	}

	srvCfg, err := ServerTLS(dc.Server)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if err := c.(*tls.Conn).Handshake(); err == nil {
					_, _ = c.Write([]byte("ok"))
				}
			}()
		}
	}()
	dial := func(cfg *tls.Config) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d := tls.Dialer{Config: cfg, NetDialer: &net.Dialer{}}
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 2)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(buf); err != nil {
			return err
		}
		if string(buf) != "ok" {
			return errors.New("no greeting")
		}
		return nil
	}

	good, err := ClientTLS(dc.Client, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(good); err != nil {
		t.Fatalf("dev client refused: %v", err)
	}

	rogueCA, _ := NewCA("rogue")
	leaf, _ := rogueCA.Issue("intruder", nil, true)
	rogueCert, _ := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
	rogue := good.Clone()
	rogue.Certificates = []tls.Certificate{rogueCert}
	if err := dial(rogue); err == nil {
		t.Fatal("client signed by another CA was accepted")
	}
	anon := good.Clone()
	anon.Certificates = nil
	if err := dial(anon); err == nil {
		t.Fatal("client without a certificate was accepted")
	}
	wrongName := good.Clone()
	wrongName.ServerName = "elsewhere.test"
	if err := dial(wrongName); err == nil {
		t.Fatal("server certificate accepted for a name it does not carry")
	}
}
