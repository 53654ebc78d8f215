package transport

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
)

// Yamux settings for the guest side. A 16 MiB stream window lets one
// stream fill a fast link (file transfers); the keepalive detects a host
// that vanished without an EOF.
const (
	streamWindow      = 16 << 20
	keepAliveInterval = 15 * time.Second
	writeTimeout      = 10 * time.Second
)

func yamuxConfig(log *slog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = 256
	c.EnableKeepAlive = true
	c.KeepAliveInterval = keepAliveInterval
	c.ConnectionWriteTimeout = writeTimeout
	c.MaxStreamWindowSize = streamWindow
	c.LogOutput = nil
	c.Logger = yamuxLogger{log: log.With("component", "yamux")}
	return c
}

// yamuxLogger routes yamux's "[ERR] yamux: ..." lines to slog: [ERR] as
// warnings (the session ends and is logged by us), everything else at
// debug level.
type yamuxLogger struct{ log *slog.Logger }

func (l yamuxLogger) Print(v ...any)                 { l.emit(fmt.Sprint(v...)) }
func (l yamuxLogger) Printf(format string, v ...any) { l.emit(fmt.Sprintf(format, v...)) }
func (l yamuxLogger) Println(v ...any)               { l.emit(fmt.Sprintln(v...)) }

func (l yamuxLogger) emit(msg string) {
	msg = strings.TrimSpace(msg)
	level := slog.LevelDebug
	if rest, ok := strings.CutPrefix(msg, "[ERR] "); ok {
		level, msg = slog.LevelWarn, rest
	} else if rest, ok := strings.CutPrefix(msg, "[WARN] "); ok {
		msg = rest
	}
	l.log.Log(context.Background(), level, strings.TrimPrefix(msg, "yamux: "))
}
