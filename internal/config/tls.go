package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// loadPool reads a PEM CA bundle.
func loadPool(caFile string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca %s: no PEM certificate found", caFile)
	}
	return pool, nil
}

// ServerTLS is the agent's mTLS server config: its own certificate, and
// every client must present a certificate signed by the CA (TLS 1.3).
// The key pair is re-read on every handshake, so rotating the files on
// disk takes effect without a restart.
func ServerTLS(f TLSFiles) (*tls.Config, error) {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return nil, errors.New("server tls: ca, cert and key files are required")
	}
	pool, err := loadPool(f.CA)
	if err != nil {
		return nil, fmt.Errorf("server tls: %w", err)
	}
	if _, err := tls.LoadX509KeyPair(f.Cert, f.Key); err != nil {
		return nil, fmt.Errorf("server tls: %w", err)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  pool,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
			if err != nil {
				return nil, fmt.Errorf("load server certificate: %w", err)
			}
			return &c, nil
		},
	}, nil
}

// ClientTLS is the control plane's mTLS client config for reaching an
// agent: its client certificate, and the agent's certificate must be
// signed by the CA and name serverName ("" = the dialled host).
func ClientTLS(f TLSFiles, serverName string) (*tls.Config, error) {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return nil, errors.New("client tls: ca, cert and key files are required")
	}
	pool, err := loadPool(f.CA)
	if err != nil {
		return nil, fmt.Errorf("client tls: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("client tls: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      pool,
		Certificates: []tls.Certificate{cert},
		ServerName:   serverName,
	}, nil
}
