package fakefc_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fakefc"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fcapi"
)

// TestAPIRules drives the fake through the typed client and checks every
// validation rule it claims: status, fault_message and the request named in
// the typed error.
func TestAPIRules(t *testing.T) {
	raw := func(s string) []byte { return []byte(s) }
	action := func(a string) call { return call{"PUT", "/actions", fcapi.InstanceActionInfo{ActionType: a}} }
	cases := []struct {
		name   string
		setup  func(e *env) []call
		req    func(e *env) call
		status int    // 0: success
		fault  string // substring of fault_message
		after  string // expected GET / state afterwards ("" = don't care)
	}{
		{name: "unknown path", req: func(e *env) call { return call{"GET", "/foo", nil} },
			status: 400, fault: "Invalid request method and/or path: GET /foo."},
		{name: "wrong method", req: func(e *env) call { return call{"DELETE", "/boot-source", nil} },
			status: 400, fault: "Invalid request method and/or path: DELETE /boot-source."},
		{name: "drive without id", req: func(e *env) call { return call{"PUT", "/drives/", fcapi.Drive{}} },
			status: 400, fault: "Invalid request method and/or path"},
		{name: "malformed json", req: func(e *env) call { return call{"PUT", "/boot-source", raw(`{"kernel_image_path":`)} },
			status: 400, fault: "An error occurred when deserializing the json body"},
		{name: "empty body", req: func(e *env) call { return call{"PUT", "/machine-config", raw(``)} },
			status: 400, fault: "deserializing"},
		{name: "missing required field", req: func(e *env) call { return call{"PUT", "/boot-source", raw(`{"boot_args":"x"}`)} },
			status: 400, fault: "missing field `kernel_image_path`"},
		{name: "unknown field", req: func(e *env) call { return call{"PUT", "/boot-source", raw(`{"kernel_path":"/x"}`)} },
			status: 400, fault: "unknown field `kernel_path`"},
		{name: "nested unknown field", req: func(e *env) call {
			return call{"PUT", "/entropy", raw(`{"rate_limiter":{"bandwidth":{"size":1,"refill":1}}}`)}
		}, status: 400, fault: "unknown field `refill`"},
		{name: "wrong value type", req: func(e *env) call { return call{"PUT", "/machine-config", raw(`{"vcpu_count":"2","mem_size_mib":128}`)} },
			status: 400, fault: "deserializing"},
		{name: "drive id mismatch", req: func(e *env) call {
			return call{"PUT", "/drives/a", fcapi.Drive{DriveID: "b", PathOnHost: e.rootfs, IsReadOnly: fcapi.Bool(true)}}
		}, status: 400, fault: "does not match the id from the body"},
		{name: "iface id mismatch", req: func(e *env) call {
			return call{"PUT", "/network-interfaces/eth0", fcapi.NetworkInterface{IfaceID: "eth1", HostDevName: "tap0"}}
		}, status: 400, fault: "does not match the id from the body"},
		{name: "drive without is_read_only", req: func(e *env) call {
			return call{"PUT", "/drives/rootfs", raw(`{"drive_id":"rootfs","is_root_device":true,"path_on_host":"` + e.rootfs + `"}`)}
		}, status: 400, fault: "is_read_only"},
		{name: "second root device", setup: func(e *env) []call { return e.configure() }, req: func(e *env) call {
			return call{"PUT", "/drives/other", fcapi.Drive{DriveID: "other", PathOnHost: e.rootfs, IsRootDevice: true, IsReadOnly: fcapi.Bool(true)}}
		}, status: 400, fault: "A root block device already exists"},
		{name: "bad cache type", req: func(e *env) call {
			return call{"PUT", "/drives/d", fcapi.Drive{DriveID: "d", PathOnHost: e.rootfs, IsReadOnly: fcapi.Bool(true), CacheType: "Fast"}}
		}, status: 400, fault: "unknown variant `Fast`"},
		{name: "missing rootfs file", req: func(e *env) call {
			return call{"PUT", "/drives/rootfs", fcapi.Drive{DriveID: "rootfs", PathOnHost: e.path("nope"), IsRootDevice: true, IsReadOnly: fcapi.Bool(false)}}
		}, status: 400, fault: "cannot be opened"},
		{name: "missing kernel file", req: func(e *env) call {
			return call{"PUT", "/boot-source", fcapi.BootSource{KernelImagePath: e.path("nope")}}
		}, status: 400, fault: "The kernel file"},
		{name: "vcpu 0", req: func(e *env) call {
			return call{"PUT", "/machine-config", fcapi.MachineConfig{VCPUCount: 0, MemSizeMib: 128}}
		},
			status: 400, fault: "number of vCPUs"},
		{name: "vcpu 33", req: func(e *env) call {
			return call{"PUT", "/machine-config", fcapi.MachineConfig{VCPUCount: 33, MemSizeMib: 128}}
		},
			status: 400, fault: "number of vCPUs"},
		{name: "vcpu 32", req: func(e *env) call {
			return call{"PUT", "/machine-config", fcapi.MachineConfig{VCPUCount: 32, MemSizeMib: 128}}
		}},
		{name: "odd vcpus with smt", req: func(e *env) call {
			return call{"PUT", "/machine-config", fcapi.MachineConfig{VCPUCount: 3, MemSizeMib: 128, SMT: true}}
		}, status: 400, fault: "number of vCPUs"},
		{name: "machine-config after boot", setup: func(e *env) []call { return e.boot() },
			req: func(e *env) call {
				return call{"PUT", "/machine-config", fcapi.MachineConfig{VCPUCount: 2, MemSizeMib: 256}}
			},
			status: 400, fault: "not supported after starting the microVM"},
		{name: "boot-source after boot", setup: func(e *env) []call { return e.boot() },
			req:    func(e *env) call { return call{"PUT", "/boot-source", fcapi.BootSource{KernelImagePath: e.kernel}} },
			status: 400, fault: "not supported after starting the microVM"},
		{name: "vsock after boot", setup: func(e *env) []call { return e.boot() },
			req:    func(e *env) call { return call{"PUT", "/vsock", fcapi.Vsock{GuestCID: 3, UDSPath: e.path("v.sock")}} },
			status: 400, fault: "not supported after starting the microVM"},
		{name: "network after boot", setup: func(e *env) []call { return e.boot() },
			req: func(e *env) call {
				return call{"PUT", "/network-interfaces/eth0", fcapi.NetworkInterface{IfaceID: "eth0", HostDevName: "tap0"}}
			}, status: 400, fault: "not supported after starting the microVM"},
		{name: "instance start twice", setup: func(e *env) []call { return e.boot() },
			req: func(e *env) call { return action("InstanceStart") }, status: 400, fault: "not supported after starting the microVM", after: "Running"},
		{name: "pause before boot", req: func(e *env) call { return call{"PATCH", "/vm", fcapi.VM{State: "Paused"}} },
			status: 400, fault: "not supported before starting the microVM", after: "Not started"},
		{name: "snapshot create before boot", req: func(e *env) call {
			return call{"PUT", "/snapshot/create", fcapi.SnapshotCreateParams{SnapshotPath: e.path("s"), MemFilePath: e.path("m")}}
		}, status: 400, fault: "not supported before starting the microVM"},
		{name: "patch drive before boot", setup: func(e *env) []call { return e.configure() },
			req:    func(e *env) call { return call{"PATCH", "/drives/rootfs", fcapi.PartialDrive{DriveID: "rootfs"}} },
			status: 400, fault: "not supported before starting the microVM"},
		{name: "ctrl-alt-del before boot", req: func(e *env) call { return action("SendCtrlAltDel") },
			status: 400, fault: "not supported before starting the microVM"},
		{name: "unknown action", req: func(e *env) call { return action("Reboot") }, status: 400, fault: "unknown variant `Reboot`"},
		{name: "bad vm state", setup: func(e *env) []call { return e.boot() },
			req: func(e *env) call { return call{"PATCH", "/vm", fcapi.VM{State: "Stopped"}} }, status: 400, fault: "unknown variant `Stopped`"},
		{name: "pause twice is a no-op", setup: func(e *env) []call { return e.paused() },
			req: func(e *env) call { return call{"PATCH", "/vm", fcapi.VM{State: "Paused"}} }, after: "Paused"},
		{name: "snapshot create while running", setup: func(e *env) []call { return e.boot() },
			req: func(e *env) call {
				return call{"PUT", "/snapshot/create", fcapi.SnapshotCreateParams{SnapshotPath: e.path("s"), MemFilePath: e.path("m")}}
			}, status: 400, fault: "not paused", after: "Running"},
		{name: "snapshot create while paused", setup: func(e *env) []call { return e.paused() },
			req: func(e *env) call {
				return call{"PUT", "/snapshot/create", fcapi.SnapshotCreateParams{SnapshotPath: e.path("s"), MemFilePath: e.path("m"), SnapshotType: "Diff"}}
			}, after: "Paused"},
		{name: "snapshot create bad type", setup: func(e *env) []call { return e.paused() },
			req: func(e *env) call {
				return call{"PUT", "/snapshot/create", fcapi.SnapshotCreateParams{SnapshotPath: e.path("s"), MemFilePath: e.path("m"), SnapshotType: "Half"}}
			}, status: 400, fault: "unknown variant `Half`"},
		{name: "snapshot load after config", setup: func(e *env) []call { return e.configure() },
			req: func(e *env) call {
				return call{"PUT", "/snapshot/load", fcapi.SnapshotLoadParams{SnapshotPath: e.path("s"), MemBackend: &fcapi.MemoryBackend{BackendType: "File", BackendPath: e.path("m")}}}
			}, status: 400, fault: "Loading a microVM snapshot not allowed after configuring boot-specific resources."},
		{name: "snapshot load after boot", setup: func(e *env) []call { return e.boot() },
			req: func(e *env) call {
				return call{"PUT", "/snapshot/load", fcapi.SnapshotLoadParams{SnapshotPath: e.path("s"), MemBackend: &fcapi.MemoryBackend{BackendType: "File", BackendPath: e.path("m")}}}
			}, status: 400, fault: "not supported after starting the microVM"},
		{name: "snapshot load both memory sources", req: func(e *env) call {
			return call{"PUT", "/snapshot/load", fcapi.SnapshotLoadParams{SnapshotPath: e.path("s"), MemFilePath: e.path("m"), MemBackend: &fcapi.MemoryBackend{BackendType: "File", BackendPath: e.path("m")}}}
		}, status: 400, fault: "either `mem_backend` or `mem_file_path`"},
		{name: "snapshot load no memory source", req: func(e *env) call {
			return call{"PUT", "/snapshot/load", fcapi.SnapshotLoadParams{SnapshotPath: e.path("s")}}
		}, status: 400, fault: "either `mem_backend` or `mem_file_path`"},
		{name: "snapshot load backend without path", req: func(e *env) call {
			return call{"PUT", "/snapshot/load", raw(`{"snapshot_path":"/s","mem_backend":{"backend_type":"File"}}`)}
		}, status: 400, fault: "missing field `backend_path`"},
		{name: "snapshot load missing files", setup: func(e *env) []call {
			return []call{{"PUT", "/logger", fcapi.Logger{Level: "Info"}}} // logger does not block a load
		}, req: func(e *env) call {
			return call{"PUT", "/snapshot/load", fcapi.SnapshotLoadParams{SnapshotPath: e.path("s"), MemBackend: &fcapi.MemoryBackend{BackendType: "File", BackendPath: e.path("m")}}}
		}, status: 400, fault: "Load snapshot error: cannot open the snapshot file"},
		{name: "instance start without kernel", req: func(e *env) call { return action("InstanceStart") },
			status: 400, fault: "Cannot start microvm without kernel configuration.", after: "Not started"},
		{name: "kernel removed before start", setup: func(e *env) []call {
			return append(e.configure(), call{"DELETE-FILE", e.kernel, nil})
		}, req: func(e *env) call { return action("InstanceStart") }, status: 400, fault: "Cannot start microvm", after: "Not started"},
		{name: "rootfs removed before start", setup: func(e *env) []call {
			return append(e.configure(), call{"DELETE-FILE", e.rootfs, nil})
		}, req: func(e *env) call { return action("InstanceStart") }, status: 400, fault: "block device file", after: "Not started"},
		{name: "vsock uds exists", setup: func(e *env) []call { return []call{{"CREATE-FILE", e.path("v.sock"), nil}} },
			req:    func(e *env) call { return call{"PUT", "/vsock", fcapi.Vsock{GuestCID: 3, UDSPath: e.path("v.sock")}} },
			status: 400, fault: "Address in use"},
		{name: "vsock cid 2", req: func(e *env) call { return call{"PUT", "/vsock", fcapi.Vsock{GuestCID: 2, UDSPath: e.path("v.sock")}} },
			status: 400, fault: "guest CID"},
		{name: "body over 51200 bytes", req: func(e *env) call {
			return call{"PUT", "/boot-source", fcapi.BootSource{KernelImagePath: e.kernel, BootArgs: strings.Repeat("a", 51200)}}
		}, status: 400, fault: "larger than the limit of 51200"},
		{name: "mmds store over limit", setup: func(e *env) []call {
			return []call{
				{"PUT", "/mmds", map[string]any{"a": strings.Repeat("x", 30000)}},
			}
		}, req: func(e *env) call { return call{"PATCH", "/mmds", map[string]any{"b": strings.Repeat("y", 30000)}} },
			status: 413, fault: "size limit"},
		{name: "mmds empty", req: func(e *env) call { return call{"GET", "/mmds", nil} }, status: 404, fault: "not initialized"},
		{name: "mmds config unknown iface", req: func(e *env) call {
			return call{"PUT", "/mmds/config", fcapi.MMDSConfig{NetworkInterfaces: []string{"eth9"}}}
		}, status: 400, fault: "does not correspond to any existing network interface"},
		{name: "logger twice", setup: func(e *env) []call { return []call{{"PUT", "/logger", fcapi.Logger{Level: "Info"}}} },
			req: func(e *env) call { return call{"PUT", "/logger", fcapi.Logger{Level: "Info"}} }, status: 400, fault: "already"},
		{name: "logger missing file", req: func(e *env) call { return call{"PUT", "/logger", fcapi.Logger{LogPath: e.path("nope.log")}} },
			status: 400, fault: "Cannot initialize logger"},
		{name: "flush metrics without metrics", req: func(e *env) call { return action("FlushMetrics") },
			status: 400, fault: "metrics system"},
		{name: "flush metrics", setup: func(e *env) []call {
			return []call{{"CREATE-FILE", e.path("m.json"), nil}, {"PUT", "/metrics", fcapi.Metrics{MetricsPath: e.path("m.json")}}}
		}, req: func(e *env) call { return action("FlushMetrics") }},
		{name: "balloon bigger than memory", req: func(e *env) call { return call{"PUT", "/balloon", fcapi.Balloon{AmountMib: 4096}} },
			status: 400, fault: "too large"},
		{name: "guest mac malformed", req: func(e *env) call {
			return call{"PUT", "/network-interfaces/eth0", fcapi.NetworkInterface{IfaceID: "eth0", HostDevName: "tap0", GuestMAC: "06:00:zz"}}
		}, status: 400, fault: "MAC"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, fakefc.Config{})
			if tc.setup != nil {
				for _, c := range tc.setup(e) {
					switch c.method {
					case "DELETE-FILE":
						if err := os.Remove(c.path); err != nil {
							t.Fatal(err)
						}
					case "CREATE-FILE":
						if err := os.WriteFile(c.path, nil, 0o600); err != nil {
							t.Fatal(err)
						}
					default:
						e.mustDo(t, c)
					}
				}
			}
			req := tc.req(e)
			err := e.do(context.Background(), req)
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("want success, got %v", err)
				}
			} else {
				ae := apiErr(err)
				if ae == nil {
					t.Fatalf("want *fcapi.APIError %d, got %v", tc.status, err)
				}
				if ae.Status != tc.status || !strings.Contains(ae.FaultMessage, tc.fault) {
					t.Fatalf("got %d %q, want %d containing %q", ae.Status, ae.FaultMessage, tc.status, tc.fault)
				}
				if ae.Method != req.method || ae.Path != req.path {
					t.Fatalf("error names %s %s, want %s %s", ae.Method, ae.Path, req.method, req.path)
				}
			}
			if tc.after != "" {
				if got := e.state(t); got != tc.after {
					t.Fatalf("state after: %q, want %q", got, tc.after)
				}
			}
		})
	}
}

// TestFailedLoadEndsProcess: like Firecracker, a snapshot load that fails
// past validation ends the VMM.
func TestFailedLoadEndsProcess(t *testing.T) {
	e := newEnv(t, fakefc.Config{})
	err := e.c.LoadSnapshot(context.Background(), fcapi.SnapshotLoadParams{
		SnapshotPath: e.path("missing"), MemBackend: &fcapi.MemoryBackend{BackendType: fcapi.BackendFile, BackendPath: e.path("mem")},
	})
	if ae := apiErr(err); ae == nil || ae.Status != 400 {
		t.Fatalf("want 400, got %v", err)
	}
	select {
	case <-e.vmm.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("VMM still running after a failed load")
	}
	if e.vmm.ExitCode() == 0 {
		t.Fatal("exit code 0 after a failed load")
	}
}

// TestStatusCodesAndShapes checks the wire shape the typed client hides:
// 204 with no body for PUT/PATCH, 200 JSON for GET, 400 JSON fault.
func TestStatusCodesAndShapes(t *testing.T) {
	e := newEnv(t, fakefc.Config{ID: "vm-1"})
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", e.path("api.sock"))
	}}}
	defer hc.CloseIdleConnections()
	send := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, "http://localhost"+path, strings.NewReader(body))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, body := send("PUT", "/machine-config", `{"vcpu_count":2,"mem_size_mib":256}`); st != 204 || body != "" {
		t.Fatalf("PUT: %d %q", st, body)
	}
	st, body := send("GET", "/machine-config", "")
	var mc fcapi.MachineConfig
	if st != 200 || json.Unmarshal([]byte(body), &mc) != nil || mc.VCPUCount != 2 || mc.MemSizeMib != 256 {
		t.Fatalf("GET machine-config: %d %q", st, body)
	}
	st, body = send("GET", "/", "")
	var info fcapi.InstanceInfo
	if st != 200 || json.Unmarshal([]byte(body), &info) != nil || info.ID != "vm-1" || info.State != "Not started" || info.AppName != "Firecracker" {
		t.Fatalf("GET /: %d %q", st, body)
	}
	st, body = send("GET", "/nope", "")
	var f map[string]string
	if st != 400 || json.Unmarshal([]byte(body), &f) != nil || f["fault_message"] != "Invalid request method and/or path: GET /nope." || len(f) != 1 {
		t.Fatalf("fault: %d %q", st, body)
	}
}

// TestPutResetsOptionalFields: a machine-config PUT resets what it leaves
// out; a PATCH keeps it. GET /vm/config reports the result.
func TestPutResetsOptionalFields(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, fakefc.Config{})
	if err := e.c.PutMachineConfig(ctx, fcapi.MachineConfig{VCPUCount: 2, MemSizeMib: 256, TrackDirtyPages: true}); err != nil {
		t.Fatal(err)
	}
	if err := e.c.PatchMachineConfig(ctx, map[string]any{"vcpu_count": 4}); err != nil {
		t.Fatal(err)
	}
	mc, err := e.c.GetMachineConfig(ctx)
	if err != nil || mc.VCPUCount != 4 || !mc.TrackDirtyPages || mc.MemSizeMib != 256 {
		t.Fatalf("after patch: %+v %v", mc, err)
	}
	if err := e.c.PutMachineConfig(ctx, fcapi.MachineConfig{VCPUCount: 1, MemSizeMib: 128}); err != nil {
		t.Fatal(err)
	}
	cfg, err := e.c.GetVMConfig(ctx)
	if err != nil || cfg.MachineConfig == nil || cfg.MachineConfig.TrackDirtyPages || cfg.MachineConfig.VCPUCount != 1 {
		t.Fatalf("after put: %+v %v", cfg.MachineConfig, err)
	}
}

// TestEveryEndpointAccepted sends one valid request to every endpoint the
// client types, so a misspelt field name in fcapi fails here (the fake
// checks names against its own schema table).
func TestEveryEndpointAccepted(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, fakefc.Config{})
	for _, f := range []string{"fc.log", "m.json"} {
		if err := os.WriteFile(e.path(f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	burst := int64(10)
	rl := &fcapi.RateLimiter{Bandwidth: &fcapi.TokenBucket{Size: 1 << 20, RefillTime: 100, OneTimeBurst: &burst}, Ops: &fcapi.TokenBucket{Size: 100, RefillTime: 100}}
	steps := []struct {
		name string
		run  func() error
	}{
		{"logger", func() error {
			return e.c.PutLogger(ctx, fcapi.Logger{LogPath: e.path("fc.log"), Level: "Debug", ShowLevel: true, ShowLogOrigin: true})
		}},
		{"metrics", func() error { return e.c.PutMetrics(ctx, fcapi.Metrics{MetricsPath: e.path("m.json")}) }},
		{"boot-source", func() error {
			return e.c.PutBootSource(ctx, fcapi.BootSource{KernelImagePath: e.kernel, InitrdPath: e.rootfs, BootArgs: "console=ttyS0"})
		}},
		{"drive", func() error {
			return e.c.PutDrive(ctx, fcapi.Drive{DriveID: "rootfs", PathOnHost: e.rootfs, IsRootDevice: true, IsReadOnly: fcapi.Bool(false),
				PartUUID: "x", CacheType: fcapi.CacheWriteback, IOEngine: fcapi.IOEngineAsync, RateLimiter: rl})
		}},
		{"machine-config", func() error {
			return e.c.PutMachineConfig(ctx, fcapi.MachineConfig{VCPUCount: 2, MemSizeMib: 256, SMT: true, TrackDirtyPages: true, HugePages: fcapi.HugePagesNone})
		}},
		{"network", func() error {
			return e.c.PutNetworkInterface(ctx, fcapi.NetworkInterface{IfaceID: "eth0", HostDevName: "tap0", GuestMAC: "06:00:AC:10:00:02", MTU: 1500, RxRateLimiter: rl, TxRateLimiter: rl})
		}},
		{"vsock", func() error { return e.c.PutVsock(ctx, fcapi.Vsock{GuestCID: 3, UDSPath: e.path("v.sock")}) }},
		{"entropy", func() error { return e.c.PutEntropy(ctx, fcapi.Entropy{RateLimiter: rl}) }},
		{"serial", func() error { return e.c.PutSerial(ctx, fcapi.Serial{SerialOutPath: e.path("serial.log")}) }},
		{"mmds config", func() error {
			return e.c.PutMMDSConfig(ctx, fcapi.MMDSConfig{NetworkInterfaces: []string{"eth0"}, Version: fcapi.MMDSV2, IPv4Address: "169.254.169.254", IMDSCompat: true})
		}},
		{"mmds put", func() error { return e.c.PutMMDS(ctx, map[string]any{"a": map[string]any{"b": 1, "c": 2}}) }},
		{"mmds patch", func() error { return e.c.PatchMMDS(ctx, map[string]any{"a": map[string]any{"c": nil, "d": 3}}) }},
		{"mmds get", func() error {
			var m map[string]map[string]float64
			if err := e.c.GetMMDS(ctx, &m); err != nil {
				return err
			}
			if _, has := m["a"]["c"]; has || m["a"]["b"] != 1 || m["a"]["d"] != 3 {
				return fmt.Errorf("merge patch result %v", m)
			}
			return nil
		}},
		{"balloon", func() error {
			return e.c.PutBalloon(ctx, fcapi.Balloon{AmountMib: 16, DeflateOnOOM: true, StatsPollingIntervalS: 1, FreePageHinting: true, FreePageReporting: true})
		}},
		{"start", func() error { return e.c.InstanceStart(ctx) }},
		{"patch drive", func() error {
			return e.c.PatchDrive(ctx, fcapi.PartialDrive{DriveID: "rootfs", PathOnHost: e.rootfs, RateLimiter: rl})
		}},
		{"patch network", func() error {
			return e.c.PatchNetworkInterface(ctx, fcapi.PartialNetworkInterface{IfaceID: "eth0", RxRateLimiter: rl, TxRateLimiter: rl})
		}},
		{"patch balloon", func() error { return e.c.PatchBalloon(ctx, fcapi.BalloonUpdate{AmountMib: 32}) }},
		{"balloon stats patch", func() error { return e.c.PatchBalloonStats(ctx, fcapi.BalloonStatsUpdate{StatsPollingIntervalS: 2}) }},
		{"balloon get", func() error {
			b, err := e.c.GetBalloon(ctx)
			if err == nil && (b.AmountMib != 32 || b.StatsPollingIntervalS != 2) {
				return fmt.Errorf("balloon %+v", b)
			}
			return err
		}},
		{"balloon stats", func() error {
			s, err := e.c.GetBalloonStats(ctx)
			if err == nil && s.TargetMib != 32 {
				return fmt.Errorf("stats %+v", s)
			}
			return err
		}},
		{"flush metrics", func() error { return e.c.FlushMetrics(ctx) }},
		{"pause", func() error { return e.c.Pause(ctx) }},
		{"snapshot", func() error {
			return e.c.CreateSnapshot(ctx, fcapi.SnapshotCreateParams{SnapshotPath: e.path("vmstate"), MemFilePath: e.path("mem"), SnapshotType: fcapi.SnapshotFull})
		}},
		{"resume", func() error { return e.c.Resume(ctx) }},
		{"version", func() error {
			v, err := e.c.GetVersion(ctx)
			if err == nil && v.FirecrackerVersion != fakefc.Version {
				return fmt.Errorf("version %q", v.FirecrackerVersion)
			}
			return err
		}},
		{"vm config", func() error {
			c, err := e.c.GetVMConfig(ctx)
			if err == nil && (c.BootSource == nil || len(c.Drives) != 1 || len(c.NetworkInterfaces) != 1 || c.Vsock == nil || c.Balloon == nil || c.MMDSConfig == nil || c.Entropy == nil) {
				return fmt.Errorf("vm config %+v", c)
			}
			return err
		}},
	}
	for _, s := range steps {
		if err := s.run(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
	}
	if b, _ := os.ReadFile(e.path("m.json")); !strings.Contains(string(b), "utc_timestamp_ms") {
		t.Fatalf("metrics not flushed: %q", b)
	}
	if b, _ := os.ReadFile(e.path("fc.log")); len(b) == 0 {
		t.Fatal("nothing logged")
	}
}
