package fcapi

// The request and response bodies of the Firecracker API (swagger 1.16.1).
// JSON names are exact; optional fields carry omitempty so an unset field is
// left out rather than sent as a zero value (Firecracker rejects unknown
// fields and resets optional ones a PUT leaves out).

// TokenBucket is one rate-limiter bucket. RefillTime is in milliseconds.
type TokenBucket struct {
	Size         int64  `json:"size"`
	RefillTime   int64  `json:"refill_time"`
	OneTimeBurst *int64 `json:"one_time_burst,omitempty"`
}

// RateLimiter limits a device by bandwidth and/or operations.
type RateLimiter struct {
	Bandwidth *TokenBucket `json:"bandwidth,omitempty"`
	Ops       *TokenBucket `json:"ops,omitempty"`
}

// BootSource is the body of PUT /boot-source.
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	BootArgs        string `json:"boot_args,omitempty"`
	InitrdPath      string `json:"initrd_path,omitempty"`
}

// Drive cache and IO engine values.
const (
	CacheUnsafe    = "Unsafe"
	CacheWriteback = "Writeback"
	IOEngineSync   = "Sync"
	IOEngineAsync  = "Async"
)

// Drive is the body of PUT /drives/{drive_id}. PathOnHost and IsReadOnly are
// required for virtio-blk drives; Socket is for vhost-user drives only.
type Drive struct {
	DriveID      string       `json:"drive_id"`
	PathOnHost   string       `json:"path_on_host,omitempty"`
	IsRootDevice bool         `json:"is_root_device"`
	IsReadOnly   *bool        `json:"is_read_only,omitempty"`
	PartUUID     string       `json:"partuuid,omitempty"`
	CacheType    string       `json:"cache_type,omitempty"`
	IOEngine     string       `json:"io_engine,omitempty"`
	RateLimiter  *RateLimiter `json:"rate_limiter,omitempty"`
	Socket       string       `json:"socket,omitempty"`
}

// PartialDrive is the body of PATCH /drives/{drive_id} (after boot).
type PartialDrive struct {
	DriveID     string       `json:"drive_id"`
	PathOnHost  string       `json:"path_on_host,omitempty"`
	RateLimiter *RateLimiter `json:"rate_limiter,omitempty"`
}

// Huge page settings of MachineConfig.
const (
	HugePagesNone = "None"
	HugePages2M   = "2M"
)

// MachineConfig is the body of PUT/PATCH /machine-config and the answer of
// GET /machine-config. A PUT resets every optional field it leaves out.
type MachineConfig struct {
	VCPUCount       int    `json:"vcpu_count"`
	MemSizeMib      int    `json:"mem_size_mib"`
	SMT             bool   `json:"smt,omitempty"`
	TrackDirtyPages bool   `json:"track_dirty_pages,omitempty"`
	HugePages       string `json:"huge_pages,omitempty"`
	CPUTemplate     string `json:"cpu_template,omitempty"`
}

// NetworkInterface is the body of PUT /network-interfaces/{iface_id}.
type NetworkInterface struct {
	IfaceID       string       `json:"iface_id"`
	HostDevName   string       `json:"host_dev_name"`
	GuestMAC      string       `json:"guest_mac,omitempty"`
	MTU           int          `json:"mtu,omitempty"`
	RxRateLimiter *RateLimiter `json:"rx_rate_limiter,omitempty"`
	TxRateLimiter *RateLimiter `json:"tx_rate_limiter,omitempty"`
}

// PartialNetworkInterface is the body of PATCH /network-interfaces/{id}:
// only the rate limiters can change after boot.
type PartialNetworkInterface struct {
	IfaceID       string       `json:"iface_id"`
	RxRateLimiter *RateLimiter `json:"rx_rate_limiter,omitempty"`
	TxRateLimiter *RateLimiter `json:"tx_rate_limiter,omitempty"`
}

// Vsock is the body of PUT /vsock. Firecracker binds UDSPath at this PUT.
type Vsock struct {
	GuestCID int    `json:"guest_cid"`
	UDSPath  string `json:"uds_path"`
	VsockID  string `json:"vsock_id,omitempty"` // deprecated
}

// Entropy is the body of PUT /entropy; the zero value ({}) is valid.
type Entropy struct {
	RateLimiter *RateLimiter `json:"rate_limiter,omitempty"`
}

// Serial is the body of PUT /serial (Firecracker 1.14+).
type Serial struct {
	SerialOutPath string       `json:"serial_out_path,omitempty"`
	RateLimiter   *RateLimiter `json:"rate_limiter,omitempty"`
}

// Action types of PUT /actions.
const (
	ActionInstanceStart  = "InstanceStart"
	ActionSendCtrlAltDel = "SendCtrlAltDel"
	ActionFlushMetrics   = "FlushMetrics"
)

// InstanceActionInfo is the body of PUT /actions.
type InstanceActionInfo struct {
	ActionType string `json:"action_type"`
}

// VM states of PATCH /vm.
const (
	VMPaused  = "Paused"
	VMResumed = "Resumed"
)

// VM is the body of PATCH /vm.
type VM struct {
	State string `json:"state"`
}

// Snapshot types.
const (
	SnapshotFull = "Full"
	SnapshotDiff = "Diff"
)

// SnapshotCreateParams is the body of PUT /snapshot/create. Existing files
// are truncated. Disks are not copied: that is the caller's job.
type SnapshotCreateParams struct {
	SnapshotPath string `json:"snapshot_path"`
	MemFilePath  string `json:"mem_file_path"`
	SnapshotType string `json:"snapshot_type,omitempty"`
}

// Memory backend types of SnapshotLoadParams.
const (
	BackendFile = "File"
	BackendUffd = "Uffd"
)

// MemoryBackend says where a snapshot load gets guest memory from: the
// memory file (File) or a userfaultfd handler listening on a UDS (Uffd).
type MemoryBackend struct {
	BackendType string `json:"backend_type"`
	BackendPath string `json:"backend_path"`
}

// NetworkOverride renames one interface's TAP on snapshot load (1.12+).
type NetworkOverride struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
}

// VsockOverride moves the vsock UDS on snapshot load (1.16+).
type VsockOverride struct {
	UDSPath string `json:"uds_path"`
}

// SnapshotLoadParams is the body of PUT /snapshot/load. Exactly one of
// MemBackend and the deprecated MemFilePath must be set.
type SnapshotLoadParams struct {
	SnapshotPath        string            `json:"snapshot_path"`
	MemBackend          *MemoryBackend    `json:"mem_backend,omitempty"`
	MemFilePath         string            `json:"mem_file_path,omitempty"` // deprecated
	EnableDiffSnapshots bool              `json:"enable_diff_snapshots,omitempty"`
	TrackDirtyPages     bool              `json:"track_dirty_pages,omitempty"`
	ResumeVM            bool              `json:"resume_vm,omitempty"`
	NetworkOverrides    []NetworkOverride `json:"network_overrides,omitempty"`
	VsockOverride       *VsockOverride    `json:"vsock_override,omitempty"`
	ClockRealtime       bool              `json:"clock_realtime,omitempty"`
}

// Logger levels.
const (
	LevelError   = "Error"
	LevelWarning = "Warning"
	LevelInfo    = "Info"
	LevelDebug   = "Debug"
	LevelTrace   = "Trace"
	LevelOff     = "Off"
)

// Logger is the body of PUT /logger. LogPath must be an existing file or
// FIFO.
type Logger struct {
	LogPath       string `json:"log_path,omitempty"`
	Level         string `json:"level,omitempty"`
	ShowLevel     bool   `json:"show_level,omitempty"`
	ShowLogOrigin bool   `json:"show_log_origin,omitempty"`
	Module        string `json:"module,omitempty"`
}

// Metrics is the body of PUT /metrics. MetricsPath must exist.
type Metrics struct {
	MetricsPath string `json:"metrics_path"`
}

// MMDS versions.
const (
	MMDSV1 = "V1"
	MMDSV2 = "V2"
)

// MMDSConfig is the body of PUT /mmds/config.
type MMDSConfig struct {
	NetworkInterfaces []string `json:"network_interfaces"`
	Version           string   `json:"version,omitempty"`
	IPv4Address       string   `json:"ipv4_address,omitempty"`
	IMDSCompat        bool     `json:"imds_compat,omitempty"`
}

// Balloon is the body of PUT /balloon and the answer of GET /balloon.
type Balloon struct {
	AmountMib             int  `json:"amount_mib"`
	DeflateOnOOM          bool `json:"deflate_on_oom"`
	StatsPollingIntervalS int  `json:"stats_polling_interval_s,omitempty"`
	FreePageHinting       bool `json:"free_page_hinting,omitempty"`
	FreePageReporting     bool `json:"free_page_reporting,omitempty"`
}

// BalloonUpdate is the body of PATCH /balloon.
type BalloonUpdate struct {
	AmountMib int `json:"amount_mib"`
}

// BalloonStatsUpdate is the body of PATCH /balloon/statistics.
type BalloonStatsUpdate struct {
	StatsPollingIntervalS int `json:"stats_polling_interval_s"`
}

// BalloonStats is the answer of GET /balloon/statistics. Only the always
// present fields are typed; the guest-reported ones are optional.
type BalloonStats struct {
	TargetPages     int    `json:"target_pages"`
	ActualPages     int    `json:"actual_pages"`
	TargetMib       int    `json:"target_mib"`
	ActualMib       int    `json:"actual_mib"`
	SwapIn          *int64 `json:"swap_in,omitempty"`
	SwapOut         *int64 `json:"swap_out,omitempty"`
	MajorFaults     *int64 `json:"major_faults,omitempty"`
	MinorFaults     *int64 `json:"minor_faults,omitempty"`
	FreeMemory      *int64 `json:"free_memory,omitempty"`
	TotalMemory     *int64 `json:"total_memory,omitempty"`
	AvailableMemory *int64 `json:"available_memory,omitempty"`
	DiskCaches      *int64 `json:"disk_caches,omitempty"`
}

// Instance states reported by GET /.
const (
	StateNotStarted = "Not started"
	StateRunning    = "Running"
	StatePaused     = "Paused"
)

// InstanceInfo is the answer of GET /.
type InstanceInfo struct {
	AppName    string `json:"app_name"`
	ID         string `json:"id"`
	State      string `json:"state"`
	VMMVersion string `json:"vmm_version"`
}

// FirecrackerVersion is the answer of GET /version.
type FirecrackerVersion struct {
	FirecrackerVersion string `json:"firecracker_version"`
}

// FullVMConfig is the answer of GET /vm/config and the layout of a
// --config-file. Keys use dashes.
type FullVMConfig struct {
	BootSource        *BootSource        `json:"boot-source,omitempty"`
	Drives            []Drive            `json:"drives,omitempty"`
	MachineConfig     *MachineConfig     `json:"machine-config,omitempty"`
	NetworkInterfaces []NetworkInterface `json:"network-interfaces,omitempty"`
	Vsock             *Vsock             `json:"vsock,omitempty"`
	Logger            *Logger            `json:"logger,omitempty"`
	Metrics           *Metrics           `json:"metrics,omitempty"`
	MMDSConfig        *MMDSConfig        `json:"mmds-config,omitempty"`
	Balloon           *Balloon           `json:"balloon,omitempty"`
	Entropy           *Entropy           `json:"entropy,omitempty"`
}

// Fault is the error body Firecracker sends with a 400 (or 413).
type Fault struct {
	FaultMessage string `json:"fault_message"`
}
