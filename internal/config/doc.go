// Package config loads each binary's configuration from the environment
// (the .env.example names) and holds the TLS helpers both tiers use for
// their mTLS link: loading server and client tls.Configs, and writing a
// development CA with server and client certificates. It imports no tier.
package config
