package fcapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// stub serves handler on a Unix socket and returns a client for it.
func stub(t *testing.T, handler http.HandlerFunc) *Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "fcapi")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	go func() { _ = srv.Serve(ln) }()
	c := New(sock)
	t.Cleanup(func() {
		c.Close()
		_ = srv.Close()
		os.RemoveAll(dir)
	})
	return c
}

func TestErrorsAreTyped(t *testing.T) {
	cases := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"fault message", 400, `{"fault_message":"The requested operation is not supported after starting the microVM."}`,
			"The requested operation is not supported after starting the microVM."},
		{"mmds too large", 413, `{"fault_message":"too big"}`, "too big"},
		{"not json", 500, "internal error\n", "internal error"},
		{"empty", 404, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := stub(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			})
			err := c.PutDrive(context.Background(), Drive{DriveID: "root fs"})
			var ae *APIError
			if !errors.As(err, &ae) {
				t.Fatalf("not an *APIError: %v", err)
			}
			if ae.Status != tc.status || ae.FaultMessage != tc.want || ae.Method != "PUT" || ae.Path != "/drives/root%20fs" {
				t.Fatalf("got %+v", ae)
			}
			if !IsAPIError(err, tc.status) || IsAPIError(err, 299) || !IsAPIError(err, 0) {
				t.Fatal("IsAPIError disagrees")
			}
		})
	}
}

// TestWireFormat checks what the client sends: method, path, host,
// content type, exact field names, and optional fields left out.
func TestWireFormat(t *testing.T) {
	type seen struct {
		method, path, host, ctype string
		body                      map[string]any
	}
	var got seen
	c := stub(t, func(w http.ResponseWriter, r *http.Request) {
		got = seen{method: r.Method, path: r.URL.Path, host: r.Host, ctype: r.Header.Get("Content-Type")}
		got.body = nil
		_ = json.NewDecoder(r.Body).Decode(&got.body)
		if r.Method == http.MethodGet {
			_, _ = io.WriteString(w, `{"app_name":"Firecracker","id":"x","state":"Paused","vmm_version":"1.16.1"}`)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	ctx := context.Background()
	cases := []struct {
		name   string
		call   func() error
		method string
		path   string
		body   string // canonical JSON, "" for none
	}{
		{"boot source", func() error { return c.PutBootSource(ctx, BootSource{KernelImagePath: "/k"}) },
			"PUT", "/boot-source", `{"kernel_image_path":"/k"}`},
		{"drive", func() error {
			return c.PutDrive(ctx, Drive{DriveID: "rootfs", PathOnHost: "/r", IsRootDevice: true, IsReadOnly: Bool(false)})
		}, "PUT", "/drives/rootfs", `{"drive_id":"rootfs","is_read_only":false,"is_root_device":true,"path_on_host":"/r"}`},
		{"machine", func() error { return c.PutMachineConfig(ctx, MachineConfig{VCPUCount: 2, MemSizeMib: 512}) },
			"PUT", "/machine-config", `{"mem_size_mib":512,"vcpu_count":2}`},
		{"vsock", func() error { return c.PutVsock(ctx, Vsock{GuestCID: 3, UDSPath: "/v.sock"}) },
			"PUT", "/vsock", `{"guest_cid":3,"uds_path":"/v.sock"}`},
		{"entropy", func() error { return c.PutEntropy(ctx, Entropy{}) }, "PUT", "/entropy", `{}`},
		{"start", func() error { return c.InstanceStart(ctx) }, "PUT", "/actions", `{"action_type":"InstanceStart"}`},
		{"pause", func() error { return c.Pause(ctx) }, "PATCH", "/vm", `{"state":"Paused"}`},
		{"resume", func() error { return c.Resume(ctx) }, "PATCH", "/vm", `{"state":"Resumed"}`},
		{"snapshot create", func() error {
			return c.CreateSnapshot(ctx, SnapshotCreateParams{SnapshotPath: "/s", MemFilePath: "/m", SnapshotType: SnapshotFull})
		}, "PUT", "/snapshot/create", `{"mem_file_path":"/m","snapshot_path":"/s","snapshot_type":"Full"}`},
		{"snapshot load", func() error {
			return c.LoadSnapshot(ctx, SnapshotLoadParams{
				SnapshotPath: "/s", MemBackend: &MemoryBackend{BackendType: BackendFile, BackendPath: "/m"}, ResumeVM: true,
				NetworkOverrides: []NetworkOverride{{IfaceID: "eth0", HostDevName: "tap1"}}, VsockOverride: &VsockOverride{UDSPath: "/v2"},
			})
		}, "PUT", "/snapshot/load", `{"mem_backend":{"backend_path":"/m","backend_type":"File"},"network_overrides":[{"host_dev_name":"tap1","iface_id":"eth0"}],"resume_vm":true,"snapshot_path":"/s","vsock_override":{"uds_path":"/v2"}}`},
		{"instance info", func() error {
			info, err := c.GetInstanceInfo(ctx)
			if err == nil && info.State != StatePaused {
				return errors.New("state not decoded")
			}
			return err
		}, "GET", "/", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); err != nil {
				t.Fatal(err)
			}
			if got.method != tc.method || got.path != tc.path || got.host != "localhost" {
				t.Fatalf("sent %s %s host %q", got.method, got.path, got.host)
			}
			if tc.body == "" {
				if got.body != nil {
					t.Fatalf("unexpected body %v", got.body)
				}
				return
			}
			if got.ctype != "application/json" {
				t.Fatalf("content type %q", got.ctype)
			}
			b, _ := json.Marshal(got.body)
			if string(b) != tc.body {
				t.Fatalf("body\n got %s\nwant %s", b, tc.body)
			}
		})
	}
}

func TestNoSocket(t *testing.T) {
	c := New(filepath.Join(t.TempDir(), "none.sock"))
	err := c.InstanceStart(context.Background())
	if err == nil || IsAPIError(err, 0) || !strings.Contains(err.Error(), "PUT /actions") {
		t.Fatalf("got %v", err)
	}
}
