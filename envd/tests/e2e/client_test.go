package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"testing"

	"connectrpc.com/connect"

	"github.com/wrenn-dev/envd/internal/gen/filesystem/filesystemconnect"
	pb "github.com/wrenn-dev/envd/internal/gen/process"
	"github.com/wrenn-dev/envd/internal/gen/process/processconnect"
)

// protocols are the four wire protocols connect-go serves on one handler.
var protocols = []struct {
	name   string
	client func() *http.Client
	opts   []connect.ClientOption
}{
	{"connect-json", http1Client, []connect.ClientOption{connect.WithProtoJSON()}},
	{"connect-proto", http1Client, nil},
	{"grpc", h2cClient, []connect.ClientOption{connect.WithGRPC()}},
	{"grpc-web", http1Client, []connect.ClientOption{connect.WithGRPCWeb()}},
}

func http1Client() *http.Client { return &http.Client{} }

func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

func (e *envd) process(opts ...connect.ClientOption) processconnect.ProcessClient {
	return processconnect.NewProcessClient(http1Client(), e.base, opts...)
}

func (e *envd) fs(opts ...connect.ClientOption) filesystemconnect.FilesystemClient {
	return filesystemconnect.NewFilesystemClient(http1Client(), e.base, opts...)
}

// asUser sets the Basic-auth header that selects the OS user.
func asUser[T any](req *connect.Request[T], user string) *connect.Request[T] {
	req.Header().Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":")))
	return req
}

// result is a finished process as seen through its event stream.
type result struct {
	pid            uint32
	stdout, stderr bytes.Buffer
	pty            bytes.Buffer
	end            *pb.ProcessEvent_EndEvent
	events         []string // kinds in arrival order
}

// collect reads a Start or Connect stream to its end and checks the order:
// one start first, data/keepalive after it, exactly one end last.
func collect(t testing.TB, next func() bool, ev func() *pb.ProcessEvent, errf func() error) *result {
	t.Helper()
	return collectFrom(t, &result{}, next, ev, errf)
}

// collectRest continues a stream whose start event the caller already read.
func collectRest(t testing.TB, pid uint32, next func() bool, ev func() *pb.ProcessEvent, errf func() error) *result {
	t.Helper()
	return collectFrom(t, &result{pid: pid, events: []string{"start"}}, next, ev, errf)
}

func collectFrom(t testing.TB, r *result, next func() bool, ev func() *pb.ProcessEvent, errf func() error) *result {
	t.Helper()
	for next() {
		e := ev()
		switch {
		case e.GetStart() != nil:
			if len(r.events) != 0 {
				t.Errorf("start event after %v", r.events)
			}
			r.pid = e.GetStart().GetPid()
			r.events = append(r.events, "start")
		case e.GetData() != nil:
			d := e.GetData()
			r.stdout.Write(d.GetStdout())
			r.stderr.Write(d.GetStderr())
			r.pty.Write(d.GetPty())
			r.events = append(r.events, "data")
		case e.GetKeepalive() != nil:
			r.events = append(r.events, "keepalive")
		case e.GetEnd() != nil:
			if r.end != nil {
				t.Errorf("second end event")
			}
			r.end = e.GetEnd()
			r.events = append(r.events, "end")
		}
		if r.end != nil && e.GetEnd() == nil {
			t.Errorf("event after end: %v", e)
		}
	}
	if err := errf(); err != nil {
		t.Fatalf("stream error: %v", err)
	}
	if len(r.events) == 0 || r.events[0] != "start" || r.end == nil {
		t.Fatalf("bad event order %v", r.events)
	}
	return r
}

func run(t testing.TB, ctx context.Context, pc processconnect.ProcessClient, req *connect.Request[pb.StartRequest]) *result {
	t.Helper()
	s, err := pc.Start(ctx, req)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer s.Close()
	return collect(t, s.Receive, func() *pb.ProcessEvent { return s.Msg().GetEvent() }, s.Err)
}

func startReq(cmd string, args ...string) *connect.Request[pb.StartRequest] {
	no := false
	return connect.NewRequest(&pb.StartRequest{
		Process: &pb.ProcessConfig{Cmd: cmd, Args: args},
		Stdin:   &no,
	})
}

func sh(script string) *connect.Request[pb.StartRequest] {
	return startReq("/bin/sh", "-c", script)
}

func byPID(pid uint32) *pb.ProcessSelector {
	return &pb.ProcessSelector{Selector: &pb.ProcessSelector_Pid{Pid: pid}}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprintf("unexpected error: %v", err))
	}
	return v
}
