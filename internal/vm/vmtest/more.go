package vmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

// Failures are the broken inputs RunMore needs; empty fields skip their
// subtests.
type Failures struct {
	// NoEnvdRootfs is a rootfs the guest boots from but where envd never
	// starts (the VM must fail to come up, not hang forever).
	NoEnvdRootfs string
}

// RunMore is the rest of the shared behaviour: files in and out through
// envd, a missing rootfs, and a VM that never becomes healthy. Drivers
// that can boot a real guest run it next to Run.
func RunMore(t *testing.T, newDriver NewDriver, f Failures) {
	t.Run("FilesInAndOut", func(t *testing.T) { testFiles(t, newDriver) })
	t.Run("MissingRootfs", func(t *testing.T) { testMissingRootfs(t, newDriver) })
	t.Run("NeverHealthy", func(t *testing.T) {
		if f.NoEnvdRootfs == "" {
			t.Skip("no rootfs without envd given")
		}
		testNeverHealthy(t, newDriver, f.NoEnvdRootfs)
	})
}

// filesURL is envd's /files route for path, as root.
func filesURL(path string) string {
	return EnvdBaseURL + "/files?" + url.Values{"path": {path}, "username": {"root"}}.Encode()
}

func testFiles(t *testing.T, newDriver NewDriver) {
	d, spec := newDriver(t)
	inst := boot(t, d, spec)
	ctx := ctxFor(t, time.Minute)
	payload := bytes.Repeat([]byte("wrenn\x00\xff\n"), 50000)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, filesURL("/root/in/blob"), bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Authorization", "Basic cm9vdDo=")
	resp, err := HTTPClient(inst).Do(req)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("upload: %s: %s", resp.Status, body)
	}
	// The guest sees what was uploaded...
	res, err := Exec(ctx, inst, "/bin/sh", "-c", "wc -c < /root/in/blob; cp /root/in/blob /root/out")
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("check upload in the guest: %+v %v", res, err)
	}
	if strings.TrimSpace(res.Stdout) != strconv.Itoa(len(payload)) {
		t.Fatalf("guest sees %s bytes, uploaded %d", res.Stdout, len(payload))
	}
	// ...and a file the guest wrote comes back intact.
	req, err = http.NewRequestWithContext(ctx, http.MethodGet, filesURL("/root/out"), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Basic cm9vdDo=")
	resp, err = HTTPClient(inst).Do(req)
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("download: %s %v", resp.Status, err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("downloaded %d bytes that differ from the %d uploaded", len(got), len(payload))
	}
}

func testMissingRootfs(t *testing.T, newDriver NewDriver) {
	d, spec := newDriver(t)
	spec.Rootfs = filepath.Join(spec.RunDir, "no-such-rootfs")
	_, err := d.Create(ctxFor(t, time.Minute), spec)
	if !errors.Is(err, vm.ErrInvalidSpec) || !strings.Contains(err.Error(), "no-such-rootfs") {
		t.Fatalf("create with a missing rootfs: %v, want ErrInvalidSpec naming it", err)
	}
	assertNothingFor(t, spec)
}

func testNeverHealthy(t *testing.T, newDriver NewDriver, noEnvd string) {
	d, spec := newDriver(t)
	if err := copyFile(noEnvd, spec.Rootfs); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	inst, err := d.Create(ctxFor(t, 3*time.Minute), spec)
	if err == nil {
		// A driver may report the VM as created before envd answers;
		// then waiting for envd must fail, and destroying must clean up.
		werr := WaitEnvd(ctxFor(t, time.Minute), inst)
		_ = inst.Destroy(context.Background())
		if werr == nil {
			t.Fatal("envd answered in a rootfs without envd")
		}
		err = werr
	}
	t.Logf("failed after %v: %v", time.Since(start), err)
	assertNothingFor(t, spec)
}

// assertNothingFor checks that no process runs for spec (its command line
// names the run dir or the ID) and that no socket is left in its RunDir.
func assertNothingFor(t *testing.T, spec vm.Spec) {
	t.Helper()
	for _, pid := range processesNaming(spec.RunDir, "guest="+spec.ID+",") {
		t.Errorf("process %d still runs for %s", pid, spec.ID)
	}
	for _, p := range Sockets(spec.RunDir) {
		t.Errorf("socket left behind: %s", p)
	}
}

// processesNaming lists live processes whose command line contains any of
// the given strings.
func processesNaming(subs ...string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !pidAlive(pid) {
			continue
		}
		for _, s := range subs {
			if bytes.Contains(b, []byte(s)) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}
