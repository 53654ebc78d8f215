package fakefc

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fcapi"
)

// Logger, metrics and MMDS. Logger and metrics may be set once each, before
// boot, and (unlike everything else) do not stop a snapshot load.

func (v *VMM) putLogger(body []byte) *apiError {
	var l fcapi.Logger
	if err := decode(body, loggerSchema, &l); err != nil {
		return deserializeError(err)
	}
	if e := v.preBoot(); e != nil {
		return e
	}
	if err := v.setLogger(l); err != nil {
		return badRequest("%v", err)
	}
	return nil
}

func (v *VMM) setLogger(l fcapi.Logger) error {
	if v.logger != nil {
		return fmt.Errorf("Cannot initialize logger: the logger is already initialized.")
	}
	if l.Level != "" {
		if err := oneOf(l.Level, fcapi.LevelError, fcapi.LevelWarning, fcapi.LevelInfo,
			fcapi.LevelDebug, fcapi.LevelTrace, fcapi.LevelOff); err != nil {
			return fmt.Errorf("Cannot initialize logger: %w", err)
		}
	}
	if l.LogPath != "" {
		// Like Firecracker: append to an existing file or FIFO, never create.
		f, err := os.OpenFile(l.LogPath, os.O_WRONLY|os.O_APPEND|syscall.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("Cannot initialize logger: %w", err)
		}
		v.logFile = f
	}
	v.logger = &l
	v.logf("Running Firecracker v%s (fake)", Version)
	return nil
}

func (v *VMM) putMetrics(body []byte) *apiError {
	var m fcapi.Metrics
	if err := decode(body, metricsSchema, &m); err != nil {
		return deserializeError(err)
	}
	if e := v.preBoot(); e != nil {
		return e
	}
	if err := v.setMetrics(m); err != nil {
		return badRequest("%v", err)
	}
	return nil
}

func (v *VMM) setMetrics(m fcapi.Metrics) error {
	if v.metrics != nil {
		return fmt.Errorf("Reinitialization of metrics not allowed.")
	}
	f, err := os.OpenFile(m.MetricsPath, os.O_WRONLY|os.O_APPEND|syscall.O_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("Cannot initialize metrics: %w", err)
	}
	_ = f.Close()
	v.metrics = &m
	return nil
}

// flushMetrics appends one JSON line, as Firecracker does.
func (v *VMM) flushMetrics() *apiError {
	if v.metrics == nil {
		return badRequest("The metrics system was not initialized.")
	}
	f, err := os.OpenFile(v.metrics.MetricsPath, os.O_WRONLY|os.O_APPEND|syscall.O_NONBLOCK, 0)
	if err != nil {
		return badRequest("Cannot flush metrics: %v", err)
	}
	defer f.Close()
	line, _ := json.Marshal(map[string]any{"utc_timestamp_ms": time.Now().UnixMilli(), "fake": true, "state": v.state})
	if _, err := f.Write(append(line, '\n')); err != nil {
		return badRequest("Cannot flush metrics: %v", err)
	}
	return nil
}

func (v *VMM) getMMDS() (any, *apiError) {
	if v.mmds == nil {
		return nil, &apiError{status: http.StatusNotFound, msg: "The MMDS data store is not initialized."}
	}
	return v.mmds, nil
}

// mmdsBody parses an MMDS body: any JSON object.
func mmdsBody(body []byte) (map[string]any, *apiError) {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil || m == nil {
		if err == nil {
			err = fmt.Errorf("invalid type: null, expected a map")
		}
		return nil, deserializeError(err)
	}
	return m, nil
}

func (v *VMM) storeMMDS(m map[string]any) *apiError {
	b, _ := json.Marshal(m)
	if int64(len(b)) > v.cfg.MMDSLimit {
		return &apiError{status: http.StatusRequestEntityTooLarge, msg: "The MMDS data store size limit was exceeded."}
	}
	v.mmds = m
	return nil
}

func (v *VMM) putMMDS(body []byte) *apiError {
	m, e := mmdsBody(body)
	if e != nil {
		return e
	}
	return v.storeMMDS(m)
}

func (v *VMM) patchMMDS(body []byte) *apiError {
	patch, e := mmdsBody(body)
	if e != nil {
		return e
	}
	if v.mmds == nil {
		return badRequest("The MMDS data store is not initialized.")
	}
	cur, _ := v.mmds.(map[string]any)
	merged := mergePatch(cloneJSON(cur), patch)
	return v.storeMMDS(merged.(map[string]any))
}

// mergePatch applies an RFC 7396 JSON merge patch.
func mergePatch(target any, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, pv := range pm {
		if pv == nil {
			delete(tm, k)
			continue
		}
		tm[k] = mergePatch(tm[k], pv)
	}
	return tm
}

func cloneJSON(m map[string]any) map[string]any {
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
}

func (v *VMM) putMMDSConfig(body []byte) *apiError {
	var c fcapi.MMDSConfig
	if err := decode(body, mmdsConfigSchema, &c); err != nil {
		return deserializeError(err)
	}
	if e := v.preBoot(); e != nil {
		return e
	}
	if c.Version != "" {
		if err := oneOf(c.Version, fcapi.MMDSV1, fcapi.MMDSV2); err != nil {
			return deserializeError(err)
		}
	}
	if len(c.NetworkInterfaces) == 0 {
		return badRequest("The list of network interface IDs that allow forwarding MMDS requests is empty.")
	}
	for _, id := range c.NetworkInterfaces {
		if !slices.ContainsFunc(v.ifaces, func(n fcapi.NetworkInterface) bool { return n.IfaceID == id }) {
			return badRequest("The list of network interface IDs provided contains at least one ID that does not correspond to any existing network interface.")
		}
	}
	v.mmdsConfig, v.bootConfigured = &c, true
	return nil
}
