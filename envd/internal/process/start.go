package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sys/unix"

	pb "github.com/wrenn-dev/envd/internal/gen/process"
	"github.com/wrenn-dev/envd/internal/permissions"
)

// Start spawns a process and follows it: start{pid}, data and keepalive
// events, then one end event. The stream's deadline, if any, is the
// process's lifetime; the stream going away does not touch the process.
func (s *Service) Start(ctx context.Context, req *connect.Request[pb.StartRequest], stream *connect.ServerStream[pb.StartResponse]) error {
	p, sub, err := s.start(ctx, req.Msg)
	if err != nil {
		return err
	}
	defer p.unsubscribe(sub)
	send := func(ev *pb.ProcessEvent) error { return stream.Send(&pb.StartResponse{Event: ev}) }
	if err := send(startEvent(p.pid)); err != nil {
		return err
	}
	return follow(ctx, sub, keepaliveInterval(req.Header()), send)
}

// start validates the request, forks the child and returns it with a
// subscriber that sees all of its output.
func (s *Service) start(ctx context.Context, msg *pb.StartRequest) (*proc, *subscriber, error) {
	cfg := msg.GetProcess()
	if err := validateConfig(cfg); err != nil {
		return nil, nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	u, err := permissions.FromContext(ctx)
	if err != nil || u == nil {
		if err == nil {
			err = errors.New("no user")
		}
		return nil, nil, connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("cannot resolve the user to run the process as: %w", err))
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, nil, connect.NewError(connect.CodeUnavailable, errors.New("envd is shutting down"))
	}

	cwd, err := resolveCwd(cfg.GetCwd(), s.st.DefaultWorkdir(), u)
	if err != nil {
		return nil, nil, err
	}
	env := buildEnv(u, s.st.EnvVars(), cfg.GetEnvs())
	path, err := lookPath(cfg.GetCmd(), envValue(env, "PATH"), cwd)
	if err != nil {
		return nil, nil, err
	}
	wantStdin := msg.Stdin == nil || msg.GetStdin()
	sio, err := newStdio(msg.GetPty(), wantStdin)
	if err != nil {
		return nil, nil, connect.NewError(connect.CodeInternal, fmt.Errorf("set up process i/o: %w", err))
	}
	argv := append([]string{cfg.GetCmd()}, cfg.GetArgs()...)
	pid, exit, err := s.reaper.Start(path, argv, procAttr(sio, cwd, env, u))
	sio.closeChild()
	if err != nil {
		sio.closeAll()
		return nil, nil, startError(cfg.GetCmd(), err)
	}

	p := &proc{
		pid:        pid,
		tag:        msg.Tag,
		config:     cfg,
		log:        s.log.With("pid", pid),
		slowAfter:  s.slowAfter,
		drainGrace: s.drainGrace,
		pty:        sio.pty,
		stdin:      sio.stdin,
	}
	if sio.pty != nil {
		p.outputs = []*os.File{sio.pty}
		p.releasePTY = closeAfter(sio.pty, 2) // by the pump and by wait
	} else {
		p.outputs = []*os.File{sio.stdout, sio.stderr}
	}
	if dl, ok := ctx.Deadline(); ok {
		p.lifetime = time.AfterFunc(time.Until(dl), func() {
			p.log.Info("process lifetime (request timeout) reached, killing its process group")
			if err := p.signal(unix.SIGKILL); err != nil {
				p.log.Warn("kill at deadline", "err", err)
			}
		})
	}
	sub, _ := p.subscribe()
	s.register(p)
	p.log.Info("process started", "cmd", cfg.GetCmd(), "args", len(cfg.GetArgs()), "cwd", cwd,
		"user", u.Name, "pty", sio.pty != nil, "stdin", wantStdin)

	p.delivered.Add(len(p.outputs))
	if sio.pty != nil {
		go p.pump(sio.pty, outPTY, p.releasePTY)
	} else {
		go p.pump(sio.stdout, outStdout, closeAfter(sio.stdout, 1))
		go p.pump(sio.stderr, outStderr, closeAfter(sio.stderr, 1))
	}
	go p.wait(exit, s.retire)
	return p, sub, nil
}
