package integration

// Harness of the host agent's end-to-end tests: a private environment per
// test (state directories, dev certificates, a network namespace that the
// agent treats as its host side, a cgroup parent, a network name prefix),
// the agent run in-process or as a separate process, a real gRPC client
// over mTLS, and a listing of every host resource the agent can leave
// behind, to compare before and after.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/wrenn-dev/wrenn-sandbox/internal/config"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem/fstest"
	"github.com/wrenn-dev/wrenn-sandbox/internal/hostagent"
	"github.com/wrenn-dev/wrenn-sandbox/internal/id"
	"github.com/wrenn-dev/wrenn-sandbox/internal/testlog"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

// agentEnv is one test's private agent environment.
type agentEnv struct {
	t       testing.TB
	dir     string
	certs   config.DevCerts
	hostNS  string // name of the host-side namespace the test made
	prefix  string // network object name prefix
	cgroup  string // cgroup parent
	env     map[string]string
	started []func() // stops agents this env started
}

func agentRand(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newAgentEnv prepares an environment; it skips without root or QEMU.
func newAgentEnv(t testing.TB) *agentEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the host agent needs root (namespaces, TAPs, cgroups)")
	}
	for _, bin := range []string{"qemu-system-x86_64", "ip"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not installed", bin)
		}
	}
	images := fstest.MinimalRegistry(t)
	// A short directory: unix socket paths below it must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "wat-")
	if err != nil {
		t.Fatal(err)
	}
	e := &agentEnv{t: t, dir: dir, prefix: "w" + agentRand(2), cgroup: "wrenn-it-" + agentRand(3)}
	e.hostNS = e.prefix + "-host"
	certs, err := config.WriteDevCerts(filepath.Join(dir, "certs"), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.certs = certs
	agentIP(t, "netns", "add", e.hostNS)
	agentIP(t, "-n", e.hostNS, "link", "set", "lo", "up")
	accel := os.Getenv("AGENT_QEMU_ACCEL")
	if accel == "" {
		accel = "auto"
	}
	e.env = map[string]string{
		"AGENT_LISTEN_ADDR":         "127.0.0.1:0",
		"AGENT_METRICS_ADDR":        "127.0.0.1:0",
		"AGENT_HOST_ID":             "host-it",
		"AGENT_VMM":                 "qemu",
		"AGENT_QEMU_ACCEL":          accel,
		"AGENT_IMAGES_PATH":         images,
		"AGENT_SANDBOXES_PATH":      filepath.Join(dir, "sb"),
		"AGENT_SNAPSHOTS_PATH":      filepath.Join(dir, "snap"),
		"AGENT_TEMPLATE_CACHE_PATH": filepath.Join(dir, "tmpl"),
		"AGENT_NETWORK_POOL":        "10.231.0.0/24",
		"AGENT_NETWORK_HOST_NS":     e.hostNS,
		"AGENT_NETWORK_NAME_PREFIX": e.prefix,
		"AGENT_CGROUP_PARENT":       e.cgroup,
		"AGENT_TOTAL_VCPUS":         "32",
		"AGENT_TOTAL_MEMORY_MB":     "8192",
		"AGENT_DEFAULT_MEMORY_MB":   "256",
		"AGENT_BOOT_TIMEOUT":        "120s",
		"AGENT_TLS_CA":              certs.Server.CA,
		"AGENT_TLS_CERT":            certs.Server.Cert,
		"AGENT_TLS_KEY":             certs.Server.Key,
		"AGENT_LOG_LEVEL":           "debug",
		"AGENT_LOG_FORMAT":          "json",
		"AGENT_SHUTDOWN_TIMEOUT":    "5s",
	}
	t.Cleanup(e.cleanup)
	return e
}

// cleanup stops agents, destroys what is left (through a fresh agent
// when needed) and removes the environment.
func (e *agentEnv) cleanup() {
	for i := len(e.started) - 1; i >= 0; i-- {
		e.started[i]()
	}
	// Whatever a failed test left: a last agent releases it.
	if st := e.resources(); len(st["sandbox-dirs"]) > 0 || len(st["processes"]) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		a := e.startInProcess(e.t)
		for _, s := range a.list(ctx) {
			_, _ = a.c.DestroySandbox(ctx, &pb.DestroySandboxRequest{SandboxId: s.GetSandboxId()})
		}
		a.stop()
		cancel()
	}
	_ = exec.Command("ip", "netns", "del", e.hostNS).Run()
	for _, ctl := range []string{"cpu", "cpuacct", "memory", "pids", "unified"} {
		_ = os.Remove(filepath.Join("/sys/fs/cgroup", ctl, e.cgroup))
	}
	_ = os.Remove(filepath.Join("/sys/fs/cgroup", e.cgroup))
	_ = os.RemoveAll(e.dir)
}

func agentIP(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// agentClient is a connection to one running agent.
type agentClient struct {
	t       testing.TB
	agent   *hostagent.Agent // set for in-process agents
	addr    string
	metrics string
	conn    *grpc.ClientConn
	c       pb.HostAgentServiceClient
	stop    func()
}

func (e *agentEnv) dial(t testing.TB, addr string) (*grpc.ClientConn, pb.HostAgentServiceClient) {
	t.Helper()
	tlsCfg, err := config.ClientTLS(e.certs.Client, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	return conn, pb.NewHostAgentServiceClient(conn)
}

// agentLog routes agent logs to t.Log.

// startInProcess runs the agent in this test process.
func (e *agentEnv) startInProcess(t testing.TB, extra ...string) *agentClient {
	t.Helper()
	env := e.envWith(extra...)
	cfg, err := config.LoadAgent(config.MapEnv(env))
	if err != nil {
		t.Fatal(err)
	}
	var log *slog.Logger
	if _, bench := t.(*testing.B); bench {
		log = slog.New(slog.DiscardHandler)
	} else {
		log = slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := hostagent.New(ctx, cfg, "test", log)
	if err != nil {
		cancel()
		t.Fatalf("start agent: %v", err)
	}
	ready := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, func(g, m string) { ready <- [2]string{g, m} }) }()
	var addrs [2]string
	select {
	case addrs = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("agent stopped: %v", err)
	}
	conn, c := e.dial(t, addrs[0])
	ac := &agentClient{t: t, agent: a, addr: addrs[0], metrics: addrs[1], conn: conn, c: c}
	var once sync.Once
	ac.stop = func() {
		once.Do(func() {
			conn.Close()
			cancel()
			<-done
		})
	}
	e.started = append(e.started, ac.stop)
	return ac
}

func (e *agentEnv) envWith(extra ...string) map[string]string {
	env := map[string]string{}
	for k, v := range e.env {
		env[k] = v
	}
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

// binary builds cmd/host-agent into the environment's directory once
// (the Go build cache makes it a link step).
func (e *agentEnv) binary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(e.dir, "host-agent")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/host-agent")
	cmd.Dir = fstest.RepoRoot()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build host-agent: %v: %s", err, out)
	}
	return bin
}

// agentProc is the agent running as its own process.
type agentProc struct {
	*agentClient
	cmd  *exec.Cmd
	done chan struct{}

	mu    sync.Mutex
	lines []map[string]any
	seen  chan struct{} // signalled on every log line
}

// startProcess runs the agent binary with the environment plus extra
// KEY=VALUE pairs and waits until it serves.
func (e *agentEnv) startProcess(t testing.TB, extra ...string) *agentProc {
	t.Helper()
	cmd := exec.Command(e.binary(t))
	for k, v := range e.envWith(extra...) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, "PATH="+os.Getenv("PATH"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	// Its own process group, so the test's signals do not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &agentProc{cmd: cmd, done: make(chan struct{}), seen: make(chan struct{}, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			t.Logf("agent[%d]: %s", cmd.Process.Pid, line)
			var m map[string]any
			if json.Unmarshal(line, &m) == nil {
				p.mu.Lock()
				p.lines = append(p.lines, m)
				p.mu.Unlock()
				select {
				case p.seen <- struct{}{}:
				default:
				}
			}
		}
		_ = cmd.Wait()
		close(p.done)
	}()
	serving := p.waitLog(t, "host agent serving", 3*time.Minute)
	addr, _ := serving["grpc"].(string)
	conn, c := e.dial(t, addr)
	p.agentClient = &agentClient{t: t, addr: addr, conn: conn, c: c}
	p.stop = func() {
		conn.Close()
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
	}
	e.started = append(e.started, p.stop)
	return p
}

// waitLog waits for a log line with msg and returns it.
func (p *agentProc) waitLog(t testing.TB, msg string, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.After(timeout)
	for i := 0; ; {
		p.mu.Lock()
		for ; i < len(p.lines); i++ {
			if p.lines[i]["msg"] == msg {
				l := p.lines[i]
				p.mu.Unlock()
				return l
			}
		}
		p.mu.Unlock()
		select {
		case <-p.seen:
		case <-p.done:
			t.Fatalf("agent exited before logging %q", msg)
		case <-deadline:
			t.Fatalf("agent did not log %q within %s", msg, timeout)
		}
	}
}

// kill9 kills the agent process at once (its VMs keep running).
func (p *agentProc) kill9(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	// The connection stays open so calls in flight see the crash
	// (UNAVAILABLE); stop closes it.
}

// ---------------------------------------------------------------- client helpers

func (a *agentClient) create(ctx context.Context, req *pb.CreateSandboxRequest) *pb.Sandbox {
	a.t.Helper()
	if req.SandboxId == "" {
		req.SandboxId = id.NewSandboxID()
	}
	resp, err := a.c.CreateSandbox(ctx, req)
	if err != nil {
		a.t.Fatalf("create %s: %v", req.SandboxId, err)
	}
	return resp.GetSandbox()
}

func (a *agentClient) list(ctx context.Context) []*pb.Sandbox {
	resp, err := a.c.ListSandboxes(ctx, &pb.ListSandboxesRequest{})
	if err != nil {
		a.t.Fatalf("list: %v", err)
	}
	return resp.GetSandboxes()
}

// execResult is a command's collected output.
type execResult struct {
	Stdout, Stderr string
	Exit           *pb.ExecExit
	Pid            uint32
}

// exec runs a command through the agent and collects its output.
func (a *agentClient) exec(ctx context.Context, sid string, cmd string, args ...string) (execResult, error) {
	st, err := a.c.Exec(ctx, &pb.ExecRequest{SandboxId: sid, Cmd: cmd, Args: args})
	if err != nil {
		return execResult{}, err
	}
	var r execResult
	var out, errb bytes.Buffer
	for {
		msg, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return r, err
		}
		switch e := msg.GetEvent().(type) {
		case *pb.ExecResponse_Started:
			r.Pid = e.Started.GetPid()
		case *pb.ExecResponse_Stdout:
			out.Write(e.Stdout)
		case *pb.ExecResponse_Stderr:
			errb.Write(e.Stderr)
		case *pb.ExecResponse_Exit:
			r.Exit = e.Exit
		}
	}
	r.Stdout, r.Stderr = out.String(), errb.String()
	if r.Exit == nil {
		return r, fmt.Errorf("exec stream ended without an exit")
	}
	return r, nil
}

// sh runs a shell script and fails the test unless it exits 0.
func (a *agentClient) sh(ctx context.Context, sid, script string) string {
	a.t.Helper()
	r, err := a.exec(ctx, sid, "/bin/sh", "-c", script)
	if err != nil {
		a.t.Fatalf("exec in %s: %q: %v", sid, script, err)
	}
	if r.Exit.GetExitCode() != 0 {
		a.t.Fatalf("exec in %s: %q: exit %d, stderr %q", sid, script, r.Exit.GetExitCode(), r.Stderr)
	}
	return r.Stdout
}

// ---------------------------------------------------------------- leak checks

// resources lists every kind of host resource the agent creates, for
// this environment only: network namespaces with its prefix, links and
// addresses in its host-side namespace, cgroups under its parent, sandbox
// directories and disk clones, network leases and VMM processes.
func (e *agentEnv) resources() map[string][]string {
	out := map[string][]string{}
	if ents, err := os.ReadDir("/var/run/netns"); err == nil {
		for _, en := range ents {
			if strings.HasPrefix(en.Name(), e.prefix+"-") && en.Name() != e.hostNS {
				out["netns"] = append(out["netns"], en.Name())
			}
		}
	}
	if b, err := exec.Command("ip", "-n", e.hostNS, "-o", "link", "show").Output(); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if f := strings.Fields(l); len(f) > 1 && !strings.HasPrefix(f[1], "lo:") {
				out["host-links"] = append(out["host-links"], strings.TrimSuffix(f[1], ":"))
			}
		}
	}
	if b, err := exec.Command("ip", "-n", e.hostNS, "-o", "-4", "addr", "show").Output(); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if f := strings.Fields(l); len(f) > 3 && f[1] != "lo" {
				out["host-addrs"] = append(out["host-addrs"], f[1]+" "+f[3])
			}
		}
	}
	for _, ctl := range []string{"cpu", "memory", "pids", "unified", ""} {
		ents, err := os.ReadDir(filepath.Join("/sys/fs/cgroup", ctl, e.cgroup))
		if err != nil {
			continue
		}
		for _, en := range ents {
			if en.IsDir() {
				out["cgroups"] = append(out["cgroups"], ctl+":"+en.Name())
			}
		}
	}
	sbDir := e.env["AGENT_SANDBOXES_PATH"]
	if ents, err := os.ReadDir(sbDir); err == nil {
		for _, en := range ents {
			if en.IsDir() {
				out["sandbox-dirs"] = append(out["sandbox-dirs"], en.Name())
			}
		}
	}
	_ = filepath.WalkDir(sbDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".ext4") {
			out["clones"] = append(out["clones"], p)
		}
		return nil
	})
	if b, err := os.ReadFile(filepath.Join(sbDir, "network-leases.json")); err == nil {
		var f struct {
			Leases []struct {
				SandboxID string `json:"sandbox_id"`
			} `json:"leases"`
		}
		if json.Unmarshal(b, &f) == nil {
			for _, l := range f.Leases {
				out["leases"] = append(out["leases"], l.SandboxID)
			}
		}
	}
	out["processes"] = agentProcsUnder(e.dir)
	for k := range out {
		slices.Sort(out[k])
		if len(out[k]) == 0 {
			delete(out, k)
		}
	}
	return out
}

// agentProcsUnder lists live processes whose command line names a path
// under dir (the VMMs of this environment).
func agentProcsUnder(dir string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	self := strconv.Itoa(os.Getpid())
	for _, en := range ents {
		if _, err := strconv.Atoi(en.Name()); err != nil || en.Name() == self {
			continue
		}
		b, err := os.ReadFile("/proc/" + en.Name() + "/cmdline")
		if err != nil || !bytes.Contains(b, []byte(dir+"/")) {
			continue
		}
		st, _ := os.ReadFile("/proc/" + en.Name() + "/stat")
		if i := bytes.LastIndexByte(st, ')'); i > 0 && i+2 < len(st) && st[i+2] == 'Z' {
			continue
		}
		argv := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
		if argv[0] == filepath.Join(dir, "host-agent") {
			continue // the agent itself, not something it left
		}
		out = append(out, en.Name()+" "+filepath.Base(argv[0]))
	}
	return out
}

// assertSameResources fails when the resources differ from before.
func (e *agentEnv) assertSameResources(t testing.TB, before map[string][]string) {
	t.Helper()
	after := e.resources()
	for _, k := range []string{"netns", "host-links", "host-addrs", "cgroups", "sandbox-dirs", "clones", "leases", "processes"} {
		if !slices.Equal(before[k], after[k]) {
			t.Errorf("%s: before %v, after %v", k, before[k], after[k])
		}
	}
}

// freePort returns a loopback port nobody listens on.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func durationpbNew(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func hexString(b []byte) string { return hex.EncodeToString(b) }

func itoa(n int) string { return strconv.Itoa(n) }

func insecureCreds() credentials.TransportCredentials { return insecure.NewCredentials() }
