package fakefc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// The fake checks request bodies against its own copy of the swagger
// schemas (field names, required fields, nesting), written independently of
// the fcapi client's Go types, so a misspelt field in the client is caught
// here instead of being mirrored. Like Firecracker (serde with
// deny_unknown_fields), unknown fields are errors.

type field struct {
	name     string
	required bool
	obj      *schema // nested object
	array    *schema // array of objects
}

type schema struct {
	name   string
	fields []field
}

func obj(name string, fields ...field) *schema { return &schema{name: name, fields: fields} }
func req(name string) field                    { return field{name: name, required: true} }
func opt(name string) field                    { return field{name: name} }
func optObj(name string, s *schema) field      { return field{name: name, obj: s} }
func reqObj(name string, s *schema) field      { return field{name: name, required: true, obj: s} }
func optArr(name string, s *schema) field      { return field{name: name, array: s} }

var (
	tokenBucket = obj("TokenBucket", req("size"), req("refill_time"), opt("one_time_burst"))
	rateLimiter = obj("RateLimiter", optObj("bandwidth", tokenBucket), optObj("ops", tokenBucket))

	bootSourceSchema = obj("BootSource", req("kernel_image_path"), opt("boot_args"), opt("initrd_path"))
	// path_on_host and is_read_only are required for virtio-blk drives
	// (no "socket"); the handler checks that.
	driveSchema = obj("Drive", req("drive_id"), req("is_root_device"), opt("path_on_host"),
		opt("is_read_only"), opt("partuuid"), opt("cache_type"), opt("io_engine"),
		optObj("rate_limiter", rateLimiter), opt("socket"))
	partialDriveSchema = obj("PartialDrive", req("drive_id"), opt("path_on_host"),
		optObj("rate_limiter", rateLimiter))
	machineConfigSchema = obj("MachineConfiguration", req("vcpu_count"), req("mem_size_mib"),
		opt("smt"), opt("track_dirty_pages"), opt("huge_pages"), opt("cpu_template"))
	machineConfigPatchSchema = obj("MachineConfigurationPatch", opt("vcpu_count"), opt("mem_size_mib"),
		opt("smt"), opt("track_dirty_pages"), opt("huge_pages"), opt("cpu_template"))
	netIfaceSchema = obj("NetworkInterface", req("iface_id"), req("host_dev_name"), opt("guest_mac"),
		opt("mtu"), optObj("rx_rate_limiter", rateLimiter), optObj("tx_rate_limiter", rateLimiter))
	partialNetIfaceSchema = obj("PartialNetworkInterface", req("iface_id"),
		optObj("rx_rate_limiter", rateLimiter), optObj("tx_rate_limiter", rateLimiter))
	vsockSchema        = obj("Vsock", req("guest_cid"), req("uds_path"), opt("vsock_id"))
	entropySchema      = obj("EntropyDevice", optObj("rate_limiter", rateLimiter))
	serialSchema       = obj("SerialDevice", opt("serial_out_path"), optObj("rate_limiter", rateLimiter))
	actionSchema       = obj("InstanceActionInfo", req("action_type"))
	vmStateSchema      = obj("Vm", req("state"))
	snapCreateSchema   = obj("SnapshotCreateParams", req("snapshot_path"), req("mem_file_path"), opt("snapshot_type"))
	memBackendSchema   = obj("MemoryBackend", req("backend_type"), req("backend_path"))
	netOverrideSchema  = obj("NetworkOverride", req("iface_id"), req("host_dev_name"))
	vsockOverrideSchem = obj("VsockOverride", req("uds_path"))
	snapLoadSchema     = obj("SnapshotLoadParams", req("snapshot_path"), optObj("mem_backend", memBackendSchema),
		opt("mem_file_path"), opt("enable_diff_snapshots"), opt("track_dirty_pages"), opt("resume_vm"),
		optArr("network_overrides", netOverrideSchema), optObj("vsock_override", vsockOverrideSchem),
		opt("clock_realtime"))
	loggerSchema      = obj("Logger", opt("log_path"), opt("level"), opt("show_level"), opt("show_log_origin"), opt("module"))
	metricsSchema     = obj("Metrics", req("metrics_path"))
	mmdsConfigSchema  = obj("MmdsConfig", req("network_interfaces"), opt("version"), opt("ipv4_address"), opt("imds_compat"))
	balloonSchema     = obj("Balloon", req("amount_mib"), req("deflate_on_oom"), opt("stats_polling_interval_s"), opt("free_page_hinting"), opt("free_page_reporting"))
	balloonUpdSchema  = obj("BalloonUpdate", req("amount_mib"))
	balloonStatSchema = obj("BalloonStatsUpdate", req("stats_polling_interval_s"))

	configFileSchema = obj("FullVmConfiguration", optObj("boot-source", bootSourceSchema),
		optArr("drives", driveSchema), optObj("machine-config", machineConfigSchema),
		optArr("network-interfaces", netIfaceSchema), optObj("vsock", vsockSchema),
		optObj("logger", loggerSchema), optObj("metrics", metricsSchema),
		optObj("mmds-config", mmdsConfigSchema), optObj("balloon", balloonSchema),
		optObj("entropy", entropySchema), opt("cpu-config"))
)

// check validates raw against s: a JSON object with no unknown fields and
// every required field present (and not null).
func (s *schema) check(raw json.RawMessage) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("invalid type, expected struct %s: %s", s.name, strings.TrimPrefix(err.Error(), "json: "))
	}
	if m == nil {
		return fmt.Errorf("invalid type: null, expected struct %s", s.name)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !slices.ContainsFunc(s.fields, func(f field) bool { return f.name == k }) {
			return fmt.Errorf("unknown field `%s`, expected one of %s", k, s.names())
		}
	}
	for _, f := range s.fields {
		v, ok := m[f.name]
		present := ok && !bytes.Equal(bytes.TrimSpace(v), []byte("null"))
		if !present {
			if f.required {
				return fmt.Errorf("missing field `%s`", f.name)
			}
			continue
		}
		switch {
		case f.obj != nil:
			if err := f.obj.check(v); err != nil {
				return err
			}
		case f.array != nil:
			var items []json.RawMessage
			if err := json.Unmarshal(v, &items); err != nil {
				return fmt.Errorf("invalid type for `%s`, expected a sequence", f.name)
			}
			for _, it := range items {
				if err := f.array.check(it); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (s *schema) names() string {
	var b strings.Builder
	for i, f := range s.fields {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "`%s`", f.name)
	}
	return b.String()
}

// decode checks raw against s, then unmarshals it into dst. Value type
// errors (a string where a number belongs) come from the unmarshal.
func decode(raw []byte, s *schema, dst any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return fmt.Errorf("EOF while parsing a value at line 1 column 0")
	}
	if !json.Valid(raw) {
		var v any
		err := json.Unmarshal(raw, &v)
		return fmt.Errorf("%s", strings.TrimPrefix(fmt.Sprint(err), "json: "))
	}
	if err := s.check(raw); err != nil {
		return err
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

// oneOf checks an enum value the way serde reports a bad variant.
func oneOf(v string, allowed ...string) error {
	if slices.Contains(allowed, v) {
		return nil
	}
	quoted := make([]string, len(allowed))
	for i, a := range allowed {
		quoted[i] = "`" + a + "`"
	}
	return fmt.Errorf("unknown variant `%s`, expected one of %s", v, strings.Join(quoted, ", "))
}
