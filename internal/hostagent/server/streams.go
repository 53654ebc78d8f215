package server

import (
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/hostagent/sandbox"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

// ChunkSize is the largest data chunk the agent sends in a stream.
const ChunkSize = 256 << 10

// execSink forwards a command's events to the gRPC stream.
type execSink struct {
	stream grpc.ServerStreamingServer[pb.ExecResponse]
}

func (e execSink) Started(pid uint32) error {
	return e.stream.Send(&pb.ExecResponse{Event: &pb.ExecResponse_Started{Started: &pb.ExecStarted{Pid: pid}}})
}

func (e execSink) Stdout(p []byte) error {
	return e.stream.Send(&pb.ExecResponse{Event: &pb.ExecResponse_Stdout{Stdout: p}})
}

func (e execSink) Stderr(p []byte) error {
	return e.stream.Send(&pb.ExecResponse{Event: &pb.ExecResponse_Stderr{Stderr: p}})
}

// Exec implements pb.HostAgentServiceServer.
func (s *Server) Exec(req *pb.ExecRequest, stream grpc.ServerStreamingServer[pb.ExecResponse]) error {
	exit, err := s.m.Exec(stream.Context(), req.GetSandboxId(), sandbox.ExecSpec{
		Cmd: req.GetCmd(), Args: req.GetArgs(), Envs: req.GetEnvs(), Cwd: req.GetCwd(), User: req.GetUser(),
		Timeout: req.GetTimeout().AsDuration(), Stdin: req.GetStdin(),
	}, execSink{stream})
	if err != nil {
		return err
	}
	return stream.Send(&pb.ExecResponse{Event: &pb.ExecResponse_Exit{Exit: exitToPB(exit)}})
}

// Terminal implements pb.HostAgentServiceServer.
func (s *Server) Terminal(stream grpc.BidiStreamingServer[pb.TerminalRequest, pb.TerminalResponse]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	st := first.GetStart()
	if st == nil {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "terminal: the first message must be start")
	}
	t, err := s.m.OpenTerminal(ctx, st.GetSandboxId(), sandbox.TerminalSpec{
		Cmd: st.GetCmd(), Args: st.GetArgs(), Envs: st.GetEnvs(), Cwd: st.GetCwd(), User: st.GetUser(),
		Cols: st.GetSize().GetCols(), Rows: st.GetSize().GetRows(),
	})
	if err != nil {
		return err
	}
	defer t.Close()
	if err := stream.Send(&pb.TerminalResponse{Event: &pb.TerminalResponse_Started{Started: &pb.TerminalStarted{Pid: t.PID()}}}); err != nil {
		return err
	}
	inErr := make(chan error, 1)
	go func() {
		err := s.terminalInput(stream, t)
		inErr <- err
		// The client is done (or broke): end the process; the output
		// loop then sees its exit. A broken client stream also cancels
		// the call's context, which ends the output loop.
		t.Kill()
	}()
	for {
		out, exit, err := t.Recv()
		if err != nil {
			select {
			case ierr := <-inErr:
				if ierr != nil {
					return ierr
				}
			default:
			}
			return err
		}
		if exit != nil {
			return stream.Send(&pb.TerminalResponse{Event: &pb.TerminalResponse_Exit{Exit: &pb.TerminalExit{
				ExitCode: int32(exit.ExitCode), Exited: exit.Exited, Status: exit.Status}}})
		}
		if err := stream.Send(&pb.TerminalResponse{Event: &pb.TerminalResponse_Output{Output: out}}); err != nil {
			return err
		}
	}
}

// terminalInput forwards input and resizes until the client closes its
// side (nil) or fails.
func (s *Server) terminalInput(stream grpc.BidiStreamingServer[pb.TerminalRequest, pb.TerminalResponse], t *sandbox.Terminal) error {
	ctx := stream.Context()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch e := req.GetEvent().(type) {
		case *pb.TerminalRequest_Input:
			err = t.Input(ctx, e.Input)
		case *pb.TerminalRequest_Resize:
			err = t.Resize(ctx, e.Resize.GetCols(), e.Resize.GetRows())
		default:
			err = errdefs.Errorf(errdefs.ErrInvalidArgument, "terminal: start sent twice or an empty message")
		}
		if err != nil {
			return err
		}
	}
}

// chunkReader reads a WriteFile stream's chunks as one byte stream.
type chunkReader struct {
	stream grpc.ClientStreamingServer[pb.WriteFileRequest, pb.WriteFileResponse]
	buf    []byte
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		msg, err := r.stream.Recv()
		if err != nil {
			return 0, err // io.EOF at the clean end
		}
		if msg.GetHeader() != nil {
			return 0, errdefs.Errorf(errdefs.ErrInvalidArgument, "write file: header sent twice")
		}
		r.buf = msg.GetChunk()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// WriteFile implements pb.HostAgentServiceServer.
func (s *Server) WriteFile(stream grpc.ClientStreamingServer[pb.WriteFileRequest, pb.WriteFileResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return errdefs.Errorf(errdefs.ErrInvalidArgument, "write file: the first message must be the header")
	}
	p, n, err := s.m.WriteFile(stream.Context(), h.GetSandboxId(), sandbox.WriteSpec{
		Path: h.GetPath(), Mode: h.GetMode(), Owner: h.GetOwner(), Size: h.GetSize(),
	}, &chunkReader{stream: stream})
	if err != nil {
		return err
	}
	return stream.SendAndClose(&pb.WriteFileResponse{Path: p, BytesWritten: n})
}

// ReadFile implements pb.HostAgentServiceServer.
func (s *Server) ReadFile(req *pb.ReadFileRequest, stream grpc.ServerStreamingServer[pb.ReadFileResponse]) error {
	body, size, err := s.m.OpenFile(stream.Context(), req.GetSandboxId(), req.GetPath(), req.GetUser())
	if err != nil {
		return err
	}
	defer body.Close()
	buf := make([]byte, ChunkSize)
	first := true
	for {
		n, rerr := io.ReadFull(body, buf)
		if n > 0 || first {
			msg := &pb.ReadFileResponse{Chunk: buf[:n]}
			if first {
				msg.Size, first = size, false
			}
			if err := stream.Send(msg); err != nil {
				return err
			}
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF), errors.Is(rerr, io.ErrUnexpectedEOF):
			return nil
		default:
			return fmt.Errorf("read file %s: %w", req.GetPath(), rerr)
		}
	}
}
