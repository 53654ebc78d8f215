package fakefc

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fcapi"
)

// apiError is a fault answer: 400 for everything, 404 for an empty MMDS,
// 413 for an MMDS store over its limit.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// The fake's fault messages. These four follow Firecracker's wording as
// far as we know it (not checked against a running Firecracker); the rest
// say the same things in the fake's own words. Callers should match on the
// status and the request, not on exact text.
var (
	errAfterBoot       = badRequest("The requested operation is not supported after starting the microVM.")
	errBeforeBoot      = badRequest("The requested operation is not supported before starting the microVM.")
	errLoadAfterConfig = badRequest("Loading a microVM snapshot not allowed after configuring boot-specific resources.")
	errNoKernel        = badRequest("Cannot start microvm without kernel configuration.")
)

func deserializeError(err error) *apiError {
	return badRequest("An error occurred when deserializing the json body of a request: %s.", err)
}

// ServeHTTP handles one API request; requests are serialised.
func (v *VMM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v.mu.Lock()
	body, size, tooBig := readBody(r, v.cfg.MaxPayload)
	var out any
	var aerr *apiError
	if tooBig {
		aerr = badRequest("Request payload with size %d is larger than the limit of %d allowed by server.", size, v.cfg.MaxPayload)
	} else {
		out, aerr = v.route(r.Method, r.URL.Path, body)
	}
	v.mu.Unlock()

	w.Header().Set("Server", "Firecracker API")
	if tooBig {
		w.Header().Set("Connection", "close") // micro_http drops the connection too
	}
	switch {
	case aerr != nil:
		v.log.Debug("api fault", "method", r.Method, "path", r.URL.Path, "status", aerr.status, "fault", aerr.msg)
		writeJSON(w, aerr.status, fcapi.Fault{FaultMessage: aerr.msg})
	case out != nil:
		writeJSON(w, http.StatusOK, out)
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

// readBody reads at most limit bytes; over that it reports the size.
func readBody(r *http.Request, limit int64) ([]byte, int64, bool) {
	if r.ContentLength > limit {
		return nil, r.ContentLength, true
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil || int64(len(b)) > limit {
		return nil, int64(len(b)), true
	}
	return b, int64(len(b)), false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// route dispatches one request; a nil answer means 204.
func (v *VMM) route(method, path string, body []byte) (any, *apiError) {
	invalid := badRequest("Invalid request method and/or path: %s %s.", method, path)
	seg := strings.Split(strings.TrimPrefix(path, "/"), "/")
	arg := func() (string, bool) { // the {id} of /drives/{id} and friends
		if len(seg) != 2 || seg[1] == "" {
			return "", false
		}
		return seg[1], true
	}
	is := func(m string, p ...string) bool {
		return method == m && len(seg) == len(p) && strings.Join(seg, "/") == strings.Join(p, "/")
	}
	switch {
	case is(http.MethodGet, ""):
		return fcapi.InstanceInfo{AppName: "Firecracker", ID: v.cfg.ID, State: v.state, VMMVersion: Version}, nil
	case is(http.MethodGet, "version"):
		return fcapi.FirecrackerVersion{FirecrackerVersion: Version}, nil
	case is(http.MethodGet, "vm", "config"):
		return v.fullConfig(), nil
	case is(http.MethodPatch, "vm"):
		return nil, v.patchVM(body)
	case is(http.MethodPut, "boot-source"):
		return nil, v.putBootSource(body)
	case seg[0] == "drives" && (method == http.MethodPut || method == http.MethodPatch):
		id, ok := arg()
		if !ok {
			return nil, invalid
		}
		if method == http.MethodPut {
			return nil, v.putDrive(id, body)
		}
		return nil, v.patchDrive(id, body)
	case is(http.MethodGet, "machine-config"):
		return v.machine, nil
	case is(http.MethodPut, "machine-config"):
		return nil, v.putMachineConfig(body)
	case is(http.MethodPatch, "machine-config"):
		return nil, v.patchMachineConfig(body)
	case seg[0] == "network-interfaces" && (method == http.MethodPut || method == http.MethodPatch):
		id, ok := arg()
		if !ok {
			return nil, invalid
		}
		if method == http.MethodPut {
			return nil, v.putNetworkInterface(id, body)
		}
		return nil, v.patchNetworkInterface(id, body)
	case is(http.MethodPut, "vsock"):
		return nil, v.putVsock(body)
	case is(http.MethodPut, "entropy"):
		return nil, v.putEntropy(body)
	case is(http.MethodPut, "serial"):
		return nil, v.putSerial(body)
	case is(http.MethodPut, "actions"):
		return nil, v.action(body)
	case is(http.MethodPut, "snapshot", "create"):
		return nil, v.createSnapshot(body)
	case is(http.MethodPut, "snapshot", "load"):
		return nil, v.loadSnapshot(body)
	case is(http.MethodPut, "logger"):
		return nil, v.putLogger(body)
	case is(http.MethodPut, "metrics"):
		return nil, v.putMetrics(body)
	case is(http.MethodGet, "mmds"):
		return v.getMMDS()
	case is(http.MethodPut, "mmds"):
		return nil, v.putMMDS(body)
	case is(http.MethodPatch, "mmds"):
		return nil, v.patchMMDS(body)
	case is(http.MethodPut, "mmds", "config"):
		return nil, v.putMMDSConfig(body)
	case is(http.MethodGet, "balloon"):
		if v.balloon == nil {
			return nil, badRequest("The balloon device is not configured.")
		}
		return *v.balloon, nil
	case is(http.MethodPut, "balloon"):
		return nil, v.putBalloon(body)
	case is(http.MethodPatch, "balloon"):
		return nil, v.patchBalloon(body)
	case is(http.MethodGet, "balloon", "statistics"):
		return v.balloonStats()
	case is(http.MethodPatch, "balloon", "statistics"):
		return nil, v.patchBalloonStats(body)
	}
	return nil, invalid
}

// preBoot refuses boot-time configuration once the VM runs, and marks the
// process as configured (no snapshot load any more).
func (v *VMM) preBoot() *apiError {
	if v.state != stateNotStarted {
		return errAfterBoot
	}
	return nil
}

// postBoot refuses runtime operations before InstanceStart or a load.
func (v *VMM) postBoot() *apiError {
	if v.state == stateNotStarted {
		return errBeforeBoot
	}
	return nil
}

func (v *VMM) fullConfig() fcapi.FullVMConfig {
	mc := v.machine
	c := fcapi.FullVMConfig{
		BootSource:        v.bootSource,
		Drives:            v.drives,
		MachineConfig:     &mc,
		NetworkInterfaces: v.ifaces,
		Vsock:             v.vsockCfg,
		Logger:            v.logger,
		Metrics:           v.metrics,
		MMDSConfig:        v.mmdsConfig,
		Balloon:           v.balloon,
		Entropy:           v.entropy,
	}
	return c
}
