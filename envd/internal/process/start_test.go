package process

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"

	pb "github.com/wrenn-dev/envd/internal/gen/process"
	"github.com/wrenn-dev/envd/internal/gen/process/processconnect"
	"github.com/wrenn-dev/envd/internal/permissions"
	"github.com/wrenn-dev/envd/internal/state"
)

func TestStartExitStatus(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		name     string
		req      *pb.StartRequest
		code     int32
		exited   bool
		status   string
		hasError bool
	}{
		{"true", startReq("true"), 0, true, "exit status 0", false},
		{"false", startReq("false"), 1, true, "exit status 1", true},
		{"exit 7", startReq("/bin/sh", "-c", "exit 7"), 7, true, "exit status 7", true},
		{"sigkill self", startReq("sh", "-c", "kill -9 $$"), -1, false, "signal: killed", true},
		{"sigterm self", startReq("sh", "-c", "kill -TERM $$"), -1, false, "signal: terminated", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := h.run(bg(t), c.req)
			if err != nil {
				t.Fatal(err)
			}
			r.checkOrder(t)
			e := r.end
			if e.GetExitCode() != c.code || e.GetExited() != c.exited || e.GetStatus() != c.status {
				t.Fatalf("end = %v; want code %d exited %v status %q", e, c.code, c.exited, c.status)
			}
			if (e.Error != nil) != c.hasError {
				t.Fatalf("end error = %v, want set: %v", e.Error, c.hasError)
			}
		})
	}
}

func TestStartOutput(t *testing.T) {
	h := newHarness(t)
	big := make([]byte, 10<<20)
	rand.Read(big)
	bigFile := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(bigFile, big, 0o644); err != nil {
		t.Fatal(err)
	}
	binary := []byte{0, 1, 2, 0xff, 0xfe, '\n', 0x80, 0}
	cases := []struct {
		name           string
		req            *pb.StartRequest
		stdout, stderr []byte
	}{
		{"stdout", startReq("echo", "hello", "world"), []byte("hello world\n"), nil},
		{"stderr", startReq("sh", "-c", "echo out; echo err >&2"), []byte("out\n"), []byte("err\n")},
		{"binary", startReq("printf", `\000\001\002\377\376\n\200\000`), binary, nil},
		{"10MiB exact", startReq("cat", bigFile), big, nil},
		{"stderr large", startReq("sh", "-c", "cat "+bigFile+" >&2"), nil, big},
		{"interleaved", startReq("sh", "-c", "for i in 1 2 3 4 5; do echo o$i; echo e$i >&2; done"),
			[]byte("o1\no2\no3\no4\no5\n"), []byte("e1\ne2\ne3\ne4\ne5\n")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := h.run(bg(t), c.req)
			if err != nil {
				t.Fatal(err)
			}
			r.checkOrder(t)
			if r.end.GetExitCode() != 0 {
				t.Fatalf("end %v", r.end)
			}
			if !bytes.Equal(r.stdout, c.stdout) {
				t.Errorf("stdout: %d bytes, want %d (%q...)", len(r.stdout), len(c.stdout), head(r.stdout))
			}
			if !bytes.Equal(r.stderr, c.stderr) {
				t.Errorf("stderr: %d bytes, want %d (%q...)", len(r.stderr), len(c.stderr), head(r.stderr))
			}
			if r.maxChunk > chunkSize {
				t.Errorf("data event of %d bytes, max %d", r.maxChunk, chunkSize)
			}
		})
	}
}

func head(b []byte) []byte { return b[:min(len(b), 64)] }

func TestStartEnvironmentAndCwd(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	if _, err := h.st.Apply(state.Init{EnvVars: map[string]string{"FROM_INIT": "i", "OVERRIDE": "init"}}, ""); err != nil {
		t.Fatal(err)
	}
	req := startReq("sh", "-c", `echo "$HOME|$USER|$LOGNAME|$E2B_SANDBOX|$FROM_INIT|$OVERRIDE|$REQ"; pwd; env | grep -c '^OVERRIDE='`)
	req.Process.Envs = map[string]string{"OVERRIDE": "req", "REQ": "r"}
	req.Process.Cwd = &dir
	r, err := h.run(bg(t), req)
	if err != nil {
		t.Fatal(err)
	}
	root, err := permissions.Lookup("root")
	if err != nil {
		t.Fatal(err)
	}
	home := root.Home
	want := home + "|root|root|true|i|req|r\n" + dir + "\n1\n"
	if string(r.stdout) != want {
		t.Fatalf("stdout %q, want %q", r.stdout, want)
	}

	// Relative cwd resolves against the default workdir.
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	if _, err := h.st.Apply(state.Init{DefaultWorkdir: &dir}, ""); err != nil {
		t.Fatal(err)
	}
	rel := "sub"
	req = startReq("pwd")
	req.Process.Cwd = &rel
	if r, err = h.run(bg(t), req); err != nil || string(r.stdout) != sub+"\n" {
		t.Fatalf("relative cwd: %q %v", r.stdout, err)
	}
	// No cwd: the default workdir.
	if r, err = h.run(bg(t), startReq("pwd")); err != nil || string(r.stdout) != dir+"\n" {
		t.Fatalf("default cwd: %q %v", r.stdout, err)
	}
}

func TestStartErrors(t *testing.T) {
	h := newHarness(t)
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, []byte("x"), 0o644)
	missing := "/no/such/dir"
	cases := []struct {
		name string
		req  *pb.StartRequest
		user string
		code connect.Code
		msg  string
	}{
		{"nil config", &pb.StartRequest{}, "", connect.CodeInvalidArgument, "config is required"},
		{"empty cmd", startReq(""), "", connect.CodeInvalidArgument, "cmd is required"},
		{"nul in arg", startReq("echo", "a\x00b"), "", connect.CodeInvalidArgument, "NUL"},
		{"missing binary", startReq("no-such-binary-wrenn"), "", connect.CodeNotFound, "not found in PATH"},
		{"missing path", startReq("/no/such/binary"), "", connect.CodeNotFound, "not found"},
		{"directory", startReq("/tmp"), "", connect.CodeInvalidArgument, "is a directory"},
		{"not executable", startReq(file), "", connect.CodePermissionDenied, "permission denied"},
		{"missing cwd", &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "true", Cwd: &missing}}, "", connect.CodeInvalidArgument, "does not exist"},
		{"cwd is a file", &pb.StartRequest{Process: &pb.ProcessConfig{Cmd: "true", Cwd: &file}}, "", connect.CodeInvalidArgument, "not a directory"},
		{"unknown user", startReq("true"), "no-such-user-wrenn", connect.CodeUnauthenticated, "user"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var hdr []string
			if c.user != "" {
				hdr = []string{userHeader, c.user}
			}
			_, err := h.run(bg(t), c.req, hdr...)
			wantCode(t, err, c.code)
			if !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("error %q does not mention %q", err, c.msg)
			}
		})
	}
}

func TestStartAsOtherUser(t *testing.T) {
	requireRoot(t)
	h := newHarness(t)
	r, err := h.run(bg(t), startReq("sh", "-c", "id -u; id -g; echo $USER; pwd"), userHeader, "nobody")
	if err != nil {
		t.Skipf("no nobody user? %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(r.stdout)), "\n")
	if len(lines) != 4 || lines[0] != "65534" || lines[2] != "nobody" {
		t.Fatalf("as nobody: %q", r.stdout)
	}
	// nobody's home does not exist: the default cwd falls back to /.
	if _, err := os.Stat("/nonexistent"); err != nil && lines[3] != "/" {
		t.Fatalf("cwd %q, want /", lines[3])
	}
}

func TestStdinDisabledGivesDevNull(t *testing.T) {
	h := newHarness(t)
	req := startReq("sh", "-c", "cat; readlink /proc/self/fd/0")
	no := false
	req.Stdin = &no
	r, err := h.run(bg(t), req)
	if err != nil {
		t.Fatal(err)
	}
	if string(r.stdout) != "/dev/null\n" || r.end.GetExitCode() != 0 {
		t.Fatalf("stdout %q end %v", r.stdout, r.end)
	}
}

// The SDKs speak Connect with the JSON codec.
func TestJSONCodec(t *testing.T) {
	h := newHarness(t)
	c := processconnect.NewProcessClient(h.srv.Client(), h.srv.URL, connect.WithProtoJSON())
	s, err := c.Start(bg(t), connectReq(startReq("printf", `a\000b`)))
	if err != nil {
		t.Fatal(err)
	}
	r, err := drain(s)
	if err != nil {
		t.Fatal(err)
	}
	r.checkOrder(t)
	if string(r.stdout) != "a\x00b" || r.end.GetExitCode() != 0 {
		t.Fatalf("stdout %q end %v", r.stdout, r.end)
	}
}
