package agentstate

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm"
)

func TestSaveLoadRemove(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "sandboxes"))
	if err != nil {
		t.Fatal(err)
	}
	r := &Record{SandboxID: "sb-0000abcd", Status: models.StatusStarting, Step: StepRecorded,
		Request:     Request{Template: "minimal", VCPUs: 1, MemoryMB: 256, Envs: map[string]string{"A": "1"}},
		AccessToken: "secret"}
	s.Paths(r)
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(r.Dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, want 0600 (it holds a token)", st.Mode().Perm())
	}
	r.Step = StepVM
	r.VM = &vm.Handle{Driver: "qemu", ID: r.SandboxID, PID: 42, Sockets: map[string]string{"qmp": "/x"}}
	r.Network = json.RawMessage(`{"netns":"wrenn-0000abcd"}`)
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(r.SandboxID)
	if err != nil {
		t.Fatal(err)
	}
	var net bytes.Buffer
	if err := json.Compact(&net, got.Network); err != nil {
		t.Fatal(err)
	}
	if got.Step != StepVM || got.VM.PID != 42 || net.String() != `{"netns":"wrenn-0000abcd"}` ||
		got.Request.Envs["A"] != "1" || got.Format != FormatVersion || got.UpdatedAt.IsZero() {
		t.Fatalf("loaded %+v", got)
	}
	if _, err := os.Stat(filepath.Join(r.Dir, StateFile+".tmp")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("temp file left behind")
	}

	// A directory without a record, a non-sandbox directory and a corrupt record.
	if err := os.MkdirAll(filepath.Join(s.Root(), "sb-0000ffff", "run"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(s.Root(), "lost+found"), 0o700); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(s.Root(), "sb-0000eeee")
	os.MkdirAll(bad, 0o700)
	os.WriteFile(filepath.Join(bad, StateFile), []byte("{"), 0o600)

	all, err := s.LoadAll()
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]Entry{}
	for _, e := range all {
		byID[e.SandboxID] = e
	}
	if len(all) != 3 {
		t.Fatalf("LoadAll found %d entries: %+v", len(all), all)
	}
	if e := byID["sb-0000abcd"]; e.Record == nil || e.Err != nil {
		t.Errorf("good entry: %+v", e)
	}
	if e := byID["sb-0000ffff"]; e.Record != nil || e.Err != nil {
		t.Errorf("record-less entry: %+v", e)
	}
	if e := byID["sb-0000eeee"]; e.Record != nil || e.Err == nil {
		t.Errorf("corrupt entry: %+v", e)
	}

	if err := s.Remove(r.SandboxID); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(r.SandboxID); err != nil {
		t.Fatalf("second remove: %v", err)
	}
	if _, err := s.Load(r.SandboxID); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("load after remove: %v", err)
	}
	if err := s.Save(&Record{SandboxID: "../etc"}); err == nil {
		t.Fatal("saved a record with a bad id")
	}
}

func TestNewerFormatRefused(t *testing.T) {
	s, _ := Open(t.TempDir())
	dir := s.Dir("sb-00000001")
	os.MkdirAll(dir, 0o700)
	os.WriteFile(filepath.Join(dir, StateFile), []byte(`{"format":99,"sandbox_id":"sb-00000001"}`), 0o600)
	if _, err := s.Load("sb-00000001"); err == nil {
		t.Fatal("a newer format must not be read")
	}
}

func TestCloneIsDeep(t *testing.T) {
	r := &Record{SandboxID: "sb-00000001", Request: Request{Metadata: map[string]string{"k": "v"},
		Network: NetworkPolicy{AllowCIDRs: []string{"10.0.0.0/8"}}},
		VM: &vm.Handle{Sockets: map[string]string{"a": "b"}, Spec: vm.Spec{Net: &vm.NetSpec{TapName: "t"}}}}
	c := r.Clone()
	c.Request.Metadata["k"] = "x"
	c.Request.Network.AllowCIDRs[0] = "x"
	c.VM.Sockets["a"] = "x"
	c.VM.Spec.Net.TapName = "x"
	if r.Request.Metadata["k"] != "v" || r.Request.Network.AllowCIDRs[0] != "10.0.0.0/8" ||
		r.VM.Sockets["a"] != "b" || r.VM.Spec.Net.TapName != "t" {
		t.Fatal("Clone shares memory with the original")
	}
}

func TestRequestSameAs(t *testing.T) {
	a := Request{Template: "minimal", VCPUs: 1, MemoryMB: 256}
	tests := []struct {
		b    Request
		same bool
	}{
		{Request{Template: "minimal", VCPUs: 1, MemoryMB: 256, Metadata: map[string]string{"x": "y"}}, true},
		{Request{Template: "python311", VCPUs: 1, MemoryMB: 256}, false},
		{Request{Template: "minimal", VCPUs: 2, MemoryMB: 256}, false},
		{Request{Template: "minimal", VCPUs: 1, MemoryMB: 512}, false},
	}
	for _, tt := range tests {
		if got := a.SameAs(tt.b); got != tt.same {
			t.Errorf("SameAs(%+v) = %v", tt.b, got)
		}
	}
}
