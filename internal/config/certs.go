package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// CA is a certificate authority held in memory, for development
// certificates and tests.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// NewCA makes a self-signed ECDSA P-256 CA valid for ten years.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Wrenn dev"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create ca: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// LoadCA reads a CA certificate and key written by WriteDevCerts.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, fmt.Errorf("ca %s: not PEM", certFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse ca: %w", err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse ca key: %w", err)
	}
	return &CA{Cert: cert, Key: key, PEM: certPEM}, nil
}

// Leaf is an issued certificate and its key, PEM-encoded.
type Leaf struct {
	CertPEM, KeyPEM []byte
}

// Issue signs a leaf certificate valid for two years. Server certificates
// carry hosts as DNS or IP SANs; client certificates carry name as CN.
func (ca *CA) Issue(name string, hosts []string, client bool) (Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Leaf{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"Wrenn dev"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(2, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return Leaf{}, fmt.Errorf("issue %s: %w", name, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return Leaf{}, err
	}
	return Leaf{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}, nil
}

// Dev certificate file names inside the directory WriteDevCerts fills.
const (
	DevCAFile         = "ca.pem"
	DevCAKeyFile      = "ca-key.pem"
	DevServerFile     = "server.pem"
	DevServerKeyFile  = "server-key.pem"
	DevClientFile     = "client.pem"
	DevClientKeyFile  = "client-key.pem"
	DevClientCN       = "wrenn-control-plane"
	DevServerCN       = "wrenn-host-agent"
	devCertsDirPerm   = 0o700
	devCertsKeyPerm   = 0o600
	devCertsPublicPem = 0o644
)

// DevCerts is what WriteDevCerts wrote.
type DevCerts struct {
	Dir    string
	Server TLSFiles // for the agent
	Client TLSFiles // for the control plane
}

// DevCertFiles returns the file names inside dir without writing anything.
func DevCertFiles(dir string) DevCerts {
	p := func(n string) string { return filepath.Join(dir, n) }
	return DevCerts{
		Dir:    dir,
		Server: TLSFiles{CA: p(DevCAFile), Cert: p(DevServerFile), Key: p(DevServerKeyFile)},
		Client: TLSFiles{CA: p(DevCAFile), Cert: p(DevClientFile), Key: p(DevClientKeyFile)},
	}
}

// WriteDevCerts makes a development CA and, signed by it, a server
// certificate for hosts (plus localhost, 127.0.0.1 and ::1) and a client
// certificate. An existing CA in dir is reused, so certificates issued
// earlier stay valid; leaf files are rewritten.
func WriteDevCerts(dir string, hosts []string) (DevCerts, error) {
	out := DevCertFiles(dir)
	if err := os.MkdirAll(dir, devCertsDirPerm); err != nil {
		return out, err
	}
	caFile, caKey := filepath.Join(dir, DevCAFile), filepath.Join(dir, DevCAKeyFile)
	ca, err := LoadCA(caFile, caKey)
	if errors.Is(err, fs.ErrNotExist) {
		if ca, err = NewCA("Wrenn dev CA"); err != nil {
			return out, err
		}
		kder, err := x509.MarshalECPrivateKey(ca.Key)
		if err != nil {
			return out, err
		}
		if err := writeFile(caKey, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), devCertsKeyPerm); err != nil {
			return out, err
		}
		if err := writeFile(caFile, ca.PEM, devCertsPublicPem); err != nil {
			return out, err
		}
	} else if err != nil {
		return out, fmt.Errorf("load dev ca: %w", err)
	}
	all := append([]string{"localhost", "127.0.0.1", "::1"}, hosts...)
	srv, err := ca.Issue(DevServerCN, all, false)
	if err != nil {
		return out, err
	}
	cli, err := ca.Issue(DevClientCN, nil, true)
	if err != nil {
		return out, err
	}
	for _, f := range []struct {
		path string
		data []byte
		perm os.FileMode
	}{
		{out.Server.Cert, srv.CertPEM, devCertsPublicPem}, {out.Server.Key, srv.KeyPEM, devCertsKeyPerm},
		{out.Client.Cert, cli.CertPEM, devCertsPublicPem}, {out.Client.Key, cli.KeyPEM, devCertsKeyPerm},
	} {
		if err := writeFile(f.path, f.data, f.perm); err != nil {
			return out, err
		}
	}
	return out, nil
}

// writeFile writes atomically (temp file + rename) with perm.
func writeFile(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, perm); err != nil {
		return err
	}
	if err := os.Chmod(tmp, perm); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
