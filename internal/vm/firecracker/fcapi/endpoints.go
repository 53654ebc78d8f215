package fcapi

import (
	"context"
	"net/http"
	"net/url"
)

// GetInstanceInfo is GET /.
func (c *Client) GetInstanceInfo(ctx context.Context) (InstanceInfo, error) {
	var out InstanceInfo
	err := c.do(ctx, http.MethodGet, "/", nil, &out)
	return out, err
}

// GetVersion is GET /version.
func (c *Client) GetVersion(ctx context.Context) (FirecrackerVersion, error) {
	var out FirecrackerVersion
	err := c.do(ctx, http.MethodGet, "/version", nil, &out)
	return out, err
}

// GetVMConfig is GET /vm/config.
func (c *Client) GetVMConfig(ctx context.Context) (FullVMConfig, error) {
	var out FullVMConfig
	err := c.do(ctx, http.MethodGet, "/vm/config", nil, &out)
	return out, err
}

// PutBootSource is PUT /boot-source (pre-boot).
func (c *Client) PutBootSource(ctx context.Context, b BootSource) error {
	return c.do(ctx, http.MethodPut, "/boot-source", b, nil)
}

// PutDrive is PUT /drives/{drive_id} (pre-boot).
func (c *Client) PutDrive(ctx context.Context, d Drive) error {
	return c.do(ctx, http.MethodPut, "/drives/"+url.PathEscape(d.DriveID), d, nil)
}

// PatchDrive is PATCH /drives/{drive_id} (post-boot).
func (c *Client) PatchDrive(ctx context.Context, d PartialDrive) error {
	return c.do(ctx, http.MethodPatch, "/drives/"+url.PathEscape(d.DriveID), d, nil)
}

// GetMachineConfig is GET /machine-config.
func (c *Client) GetMachineConfig(ctx context.Context) (MachineConfig, error) {
	var out MachineConfig
	err := c.do(ctx, http.MethodGet, "/machine-config", nil, &out)
	return out, err
}

// PutMachineConfig is PUT /machine-config (pre-boot).
func (c *Client) PutMachineConfig(ctx context.Context, m MachineConfig) error {
	return c.do(ctx, http.MethodPut, "/machine-config", m, nil)
}

// PatchMachineConfig is PATCH /machine-config (pre-boot). Only the fields
// present in m are changed; pass a map to send a subset.
func (c *Client) PatchMachineConfig(ctx context.Context, m any) error {
	return c.do(ctx, http.MethodPatch, "/machine-config", m, nil)
}

// PutNetworkInterface is PUT /network-interfaces/{iface_id} (pre-boot).
func (c *Client) PutNetworkInterface(ctx context.Context, n NetworkInterface) error {
	return c.do(ctx, http.MethodPut, "/network-interfaces/"+url.PathEscape(n.IfaceID), n, nil)
}

// PatchNetworkInterface is PATCH /network-interfaces/{iface_id} (post-boot).
func (c *Client) PatchNetworkInterface(ctx context.Context, n PartialNetworkInterface) error {
	return c.do(ctx, http.MethodPatch, "/network-interfaces/"+url.PathEscape(n.IfaceID), n, nil)
}

// PutVsock is PUT /vsock (pre-boot). The UDS must not exist yet.
func (c *Client) PutVsock(ctx context.Context, v Vsock) error {
	return c.do(ctx, http.MethodPut, "/vsock", v, nil)
}

// PutEntropy is PUT /entropy (pre-boot).
func (c *Client) PutEntropy(ctx context.Context, e Entropy) error {
	return c.do(ctx, http.MethodPut, "/entropy", e, nil)
}

// PutSerial is PUT /serial (pre-boot, Firecracker 1.14+).
func (c *Client) PutSerial(ctx context.Context, s Serial) error {
	return c.do(ctx, http.MethodPut, "/serial", s, nil)
}

// Action is PUT /actions.
func (c *Client) Action(ctx context.Context, actionType string) error {
	return c.do(ctx, http.MethodPut, "/actions", InstanceActionInfo{ActionType: actionType}, nil)
}

// InstanceStart boots the configured microVM; it returns once the vCPUs run.
func (c *Client) InstanceStart(ctx context.Context) error {
	return c.Action(ctx, ActionInstanceStart)
}

// SendCtrlAltDel asks the guest to reboot (x86, needs i8042 in the guest).
func (c *Client) SendCtrlAltDel(ctx context.Context) error {
	return c.Action(ctx, ActionSendCtrlAltDel)
}

// FlushMetrics writes the metrics now; it fails if metrics are not set up.
func (c *Client) FlushMetrics(ctx context.Context) error {
	return c.Action(ctx, ActionFlushMetrics)
}

// PatchVM is PATCH /vm with VMPaused or VMResumed (post-boot).
func (c *Client) PatchVM(ctx context.Context, state string) error {
	return c.do(ctx, http.MethodPatch, "/vm", VM{State: state}, nil)
}

// Pause is PATCH /vm Paused.
func (c *Client) Pause(ctx context.Context) error { return c.PatchVM(ctx, VMPaused) }

// Resume is PATCH /vm Resumed.
func (c *Client) Resume(ctx context.Context) error { return c.PatchVM(ctx, VMResumed) }

// CreateSnapshot is PUT /snapshot/create; the VM must be paused.
func (c *Client) CreateSnapshot(ctx context.Context, p SnapshotCreateParams) error {
	return c.do(ctx, http.MethodPut, "/snapshot/create", p, nil)
}

// LoadSnapshot is PUT /snapshot/load; only on a fresh process.
func (c *Client) LoadSnapshot(ctx context.Context, p SnapshotLoadParams) error {
	return c.do(ctx, http.MethodPut, "/snapshot/load", p, nil)
}

// PutLogger is PUT /logger.
func (c *Client) PutLogger(ctx context.Context, l Logger) error {
	return c.do(ctx, http.MethodPut, "/logger", l, nil)
}

// PutMetrics is PUT /metrics.
func (c *Client) PutMetrics(ctx context.Context, m Metrics) error {
	return c.do(ctx, http.MethodPut, "/metrics", m, nil)
}

// PutMMDS is PUT /mmds: replaces the data store with v (a JSON object).
func (c *Client) PutMMDS(ctx context.Context, v any) error {
	return c.do(ctx, http.MethodPut, "/mmds", v, nil)
}

// PatchMMDS is PATCH /mmds: a JSON merge patch of the data store.
func (c *Client) PatchMMDS(ctx context.Context, v any) error {
	return c.do(ctx, http.MethodPatch, "/mmds", v, nil)
}

// GetMMDS is GET /mmds, decoded into out.
func (c *Client) GetMMDS(ctx context.Context, out any) error {
	return c.do(ctx, http.MethodGet, "/mmds", nil, out)
}

// PutMMDSConfig is PUT /mmds/config (pre-boot).
func (c *Client) PutMMDSConfig(ctx context.Context, m MMDSConfig) error {
	return c.do(ctx, http.MethodPut, "/mmds/config", m, nil)
}

// PutBalloon is PUT /balloon (pre-boot).
func (c *Client) PutBalloon(ctx context.Context, b Balloon) error {
	return c.do(ctx, http.MethodPut, "/balloon", b, nil)
}

// PatchBalloon is PATCH /balloon (post-boot).
func (c *Client) PatchBalloon(ctx context.Context, b BalloonUpdate) error {
	return c.do(ctx, http.MethodPatch, "/balloon", b, nil)
}

// GetBalloon is GET /balloon.
func (c *Client) GetBalloon(ctx context.Context) (Balloon, error) {
	var out Balloon
	err := c.do(ctx, http.MethodGet, "/balloon", nil, &out)
	return out, err
}

// GetBalloonStats is GET /balloon/statistics.
func (c *Client) GetBalloonStats(ctx context.Context) (BalloonStats, error) {
	var out BalloonStats
	err := c.do(ctx, http.MethodGet, "/balloon/statistics", nil, &out)
	return out, err
}

// PatchBalloonStats is PATCH /balloon/statistics.
func (c *Client) PatchBalloonStats(ctx context.Context, s BalloonStatsUpdate) error {
	return c.do(ctx, http.MethodPatch, "/balloon/statistics", s, nil)
}

// Raw sends an arbitrary request (for tests and endpoints this client does
// not type); body is marshalled unless it is a json.RawMessage or []byte,
// which are sent as they are.
func (c *Client) Raw(ctx context.Context, method, path string, body, out any) error {
	return c.do(ctx, method, path, body, out)
}
