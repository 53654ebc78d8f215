package metrics

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/cgroup"
)

// allocated is what stat(2) says a file holds, read independently.
func allocated(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return uint64(st.Blocks) * 512
}

// sparseRootfs makes a 64 MiB sparse file with 1 MiB of data.
func sparseRootfs(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i)
	}
	if _, err := f.WriteAt(data, 8<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCollectorRealSources(t *testing.T) {
	cg := testCgroups(t)
	tn := newTestNet(t)
	ctx := context.Background()

	h, err := cg.Create(ctx, "sb-col", cgroup.Limits{MemoryMB: 200, OverheadMB: 56, PIDs: 16})
	if err != nil {
		t.Fatal(err)
	}
	startIn(t, cg, h, busyScript)
	rootfs := sparseRootfs(t, t.TempDir(), "rootfs.ext4")

	col := NewCollector(cg, NetlinkReader{})
	info := SandboxInfo{SandboxID: "sb-col", Cgroup: h, Rootfs: rootfs, Veth: tn.host, Netns: tn.path}
	s0 := col.Sample(ctx, info)
	if len(s0.Errors) != 0 || !s0.HasCgroup || !s0.HasDisk || !s0.HasNet {
		t.Fatalf("first sample incomplete: %+v", s0)
	}
	toSandbox := tn.send(t, tn.host, 7, 1200) // host veth transmits: the sandbox receives
	fromSandbox := tn.send(t, tn.peer, 3, 400)
	s1 := col.Sample(ctx, info)

	if s1.SandboxID != "sb-col" {
		t.Fatalf("sandbox id %q", s1.SandboxID)
	}
	if s0.CPU <= 0 || s1.CPU < s0.CPU {
		t.Errorf("cpu %s then %s; want > 0 and not falling", s0.CPU, s1.CPU)
	}
	if s1.Memory < 2_000_000 || s1.PIDs != 1 {
		t.Errorf("memory %d, pids %d; want >= 2 MB (the script holds that) and 1", s1.Memory, s1.PIDs)
	}
	if s1.MemoryLimit != 256<<20 {
		t.Errorf("memory limit %d, want %d", s1.MemoryLimit, 256<<20)
	}
	if want := allocated(t, rootfs); s1.DiskBytes != want || want < 1<<20 || want >= 64<<20 {
		t.Errorf("disk %d, stat says %d (1 MiB written into a 64 MiB sparse file)", s1.DiskBytes, want)
	}
	if got := s1.NetRxBytes - s0.NetRxBytes; got != toSandbox {
		t.Errorf("sandbox received +%d bytes, want +%d", got, toSandbox)
	}
	if got := s1.NetTxBytes - s0.NetTxBytes; got != fromSandbox {
		t.Errorf("sandbox sent +%d bytes, want +%d", got, fromSandbox)
	}
	if s1.NetRxPackets-s0.NetRxPackets != 7 || s1.NetTxPackets-s0.NetTxPackets != 3 {
		t.Errorf("packets rx +%d tx +%d, want +7 +3", s1.NetRxPackets-s0.NetRxPackets, s1.NetTxPackets-s0.NetTxPackets)
	}
}

func TestCollectorMissingSources(t *testing.T) {
	cg := testCgroups(t)
	tn := newTestNet(t)
	ctx := context.Background()
	h, err := cg.Create(ctx, "sb-gone", cgroup.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if err := cg.Delete(ctx, h); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	infos := []SandboxInfo{
		// Destroyed while we read: everything is gone, which is not an error.
		{SandboxID: "gone", Cgroup: h, Rootfs: filepath.Join(dir, "deleted"), Veth: "wrnone0", Netns: tn.path},
		// Nothing to read at all.
		{SandboxID: "bare"},
		// A namespace that cannot be opened is an error for net only.
		{SandboxID: "badns", Rootfs: sparseRootfs(t, dir, "r"), Veth: "x", Netns: filepath.Join(dir, "nons")},
	}
	got := NewCollector(cg, NetlinkReader{}).Collect(ctx, infos)
	if len(got) != 3 {
		t.Fatalf("%d samples for 3 sandboxes", len(got))
	}
	for _, s := range got[:2] {
		if s.HasCgroup || s.HasDisk || s.HasNet || len(s.Errors) != 0 {
			t.Errorf("%s: %+v, want nothing read and no errors", s.SandboxID, s)
		}
	}
	bad := got[2]
	if !bad.HasDisk || bad.HasNet || bad.Errors["net"] == nil || len(bad.Errors) != 1 {
		t.Errorf("badns: %+v, want disk read and one net error", bad)
	}
}

func TestDiskUsageDirectory(t *testing.T) {
	dir := t.TempDir()
	a := sparseRootfs(t, dir, "a")
	sub := filepath.Join(dir, "snap")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	b := sparseRootfs(t, sub, "b")
	if err := os.Link(a, filepath.Join(sub, "a-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(b, filepath.Join(dir, "b-symlink")); err != nil {
		t.Fatal(err)
	}
	got, err := diskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := allocated(t, a) + allocated(t, b); got != want {
		t.Fatalf("diskUsage = %d, want %d (hard link and symlink counted once)", got, want)
	}
}
