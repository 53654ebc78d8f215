package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/config"
)

// cpConfig is the control plane's configuration (environment).
type cpConfig struct {
	ListenAddr        string          // CP_LISTEN_ADDR, default :8000
	DatabaseURL       string          // DATABASE_URL, required
	MigrateOnStart    bool            // CP_MIGRATE_ON_START
	AgentEndpoints    []string        // CP_AGENT_ENDPOINTS, comma-separated host:port
	TLS               config.TLSFiles // CP_TLS_CA, CP_TLS_CERT, CP_TLS_KEY (client certificate)
	AgentServerName   string          // CP_AGENT_SERVER_NAME ("" = the dialled host)
	Scheduler         string          // CP_SCHEDULER: single_host | least_loaded
	SchedulerHost     string          // CP_SCHEDULER_HOST: pin single_host to this host ID
	HeartbeatInterval time.Duration   // CP_HEARTBEAT_INTERVAL, default 5s
	HostGoneAfter     time.Duration   // CP_HOST_GONE_AFTER, default 5m: unhealthy this long fails the host's sandboxes
	ShutdownTimeout   time.Duration   // CP_SHUTDOWN_TIMEOUT, default 15s
	MaxUploadBytes    int64           // CP_MAX_UPLOAD_BYTES, default 100 MiB
	LifecycleInterval time.Duration   // CP_LIFECYCLE_INTERVAL, default 10s; 0 turns the lifecycle manager off
	HibernateAfter    time.Duration   // CP_HIBERNATE_AFTER, default 1h; 0 never hibernates paused sandboxes
	LagoURL           string          // LAGO_API_URL: usage events go there ("" = none are written)
	LagoAPIKey        string          // LAGO_API_KEY
	LogLevel          string          // CP_LOG_LEVEL
	LogFormat         string          // CP_LOG_FORMAT: text | json
}

func loadConfig(get func(string) string) (cpConfig, error) {
	str := func(k, def string) string {
		if v := strings.TrimSpace(get(k)); v != "" {
			return v
		}
		return def
	}
	c := cpConfig{
		ListenAddr: str("CP_LISTEN_ADDR", ":8000"), DatabaseURL: str("DATABASE_URL", ""),
		TLS:             config.TLSFiles{CA: str("CP_TLS_CA", ""), Cert: str("CP_TLS_CERT", ""), Key: str("CP_TLS_KEY", "")},
		AgentServerName: str("CP_AGENT_SERVER_NAME", ""),
		Scheduler:       str("CP_SCHEDULER", "least_loaded"), SchedulerHost: str("CP_SCHEDULER_HOST", ""),
		LogLevel: str("CP_LOG_LEVEL", "info"), LogFormat: str("CP_LOG_FORMAT", "text"),
		LagoURL: str("LAGO_API_URL", ""), LagoAPIKey: str("LAGO_API_KEY", ""),
	}
	var err error
	if c.MigrateOnStart, err = strconv.ParseBool(str("CP_MIGRATE_ON_START", "false")); err != nil {
		return c, fmt.Errorf("CP_MIGRATE_ON_START: %w", err)
	}
	for _, ep := range strings.Split(get("CP_AGENT_ENDPOINTS"), ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			c.AgentEndpoints = append(c.AgentEndpoints, ep)
		}
	}
	durations := []struct {
		key string
		def string
		dst *time.Duration
	}{
		{"CP_HEARTBEAT_INTERVAL", "5s", &c.HeartbeatInterval},
		{"CP_SHUTDOWN_TIMEOUT", "15s", &c.ShutdownTimeout},
		{"CP_HOST_GONE_AFTER", "5m", &c.HostGoneAfter},
	}
	for _, d := range durations {
		v, err := time.ParseDuration(str(d.key, d.def))
		if err != nil || v <= 0 {
			return c, fmt.Errorf("%s: want a positive duration", d.key)
		}
		*d.dst = v
	}
	for _, d := range []struct {
		key, def string
		dst      *time.Duration
	}{
		{"CP_LIFECYCLE_INTERVAL", "10s", &c.LifecycleInterval},
		{"CP_HIBERNATE_AFTER", "1h", &c.HibernateAfter},
	} {
		if v := str(d.key, d.def); v == "0" || v == "off" {
			*d.dst = 0
		} else if *d.dst, err = time.ParseDuration(v); err != nil || *d.dst <= 0 {
			return c, fmt.Errorf("%s: want a positive duration, 0 or off", d.key)
		}
	}
	if c.MaxUploadBytes, err = strconv.ParseInt(str("CP_MAX_UPLOAD_BYTES", "104857600"), 10, 64); err != nil || c.MaxUploadBytes <= 0 {
		return c, fmt.Errorf("CP_MAX_UPLOAD_BYTES: want a positive integer")
	}
	if c.DatabaseURL == "" {
		return c, fmt.Errorf("DATABASE_URL is required")
	}
	return c, nil
}
