package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"connectrpc.com/connect"

	pb "github.com/wrenn-dev/envd/internal/gen/process"
)

// writeInput writes one ProcessInput to the process: stdin bytes to the
// stdin pipe, pty bytes to the PTY master. Writes are serialised per
// process. A write blocked on a full pipe (a child not reading) gives up when
// ctx ends. Errors are connect errors.
func (p *proc) writeInput(ctx context.Context, in *pb.ProcessInput) error {
	var (
		f    *os.File
		data []byte
	)
	switch v := in.GetInput().(type) {
	case *pb.ProcessInput_Stdin:
		if p.pty != nil {
			return connect.NewError(connect.CodeInvalidArgument,
				fmt.Errorf("process %d runs in a PTY: send pty input, not stdin", p.pid))
		}
		if p.stdin == nil {
			return connect.NewError(connect.CodeFailedPrecondition,
				fmt.Errorf("process %d was started with stdin disabled", p.pid))
		}
		if p.stdinClosed.Load() {
			return connect.NewError(connect.CodeFailedPrecondition,
				fmt.Errorf("stdin of process %d is closed", p.pid))
		}
		f, data = p.stdin, v.Stdin
	case *pb.ProcessInput_Pty:
		if p.pty == nil {
			return connect.NewError(connect.CodeInvalidArgument,
				fmt.Errorf("process %d has no PTY: send stdin input, not pty", p.pid))
		}
		f, data = p.pty, v.Pty
	default:
		return connect.NewError(connect.CodeInvalidArgument, errors.New("input must set stdin or pty bytes"))
	}
	if len(data) == 0 {
		return nil
	}
	if err := p.write(ctx, f, data); err != nil {
		switch {
		case ctx.Err() != nil:
			return contextError(ctx)
		case errors.Is(err, os.ErrClosed), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.EIO):
			return connect.NewError(connect.CodeFailedPrecondition,
				fmt.Errorf("process %d no longer accepts input (exited or closed its input): %w", p.pid, err))
		default:
			return connect.NewError(connect.CodeInternal, fmt.Errorf("write input to process %d: %w", p.pid, err))
		}
	}
	return nil
}

// write writes all of b to f, or stops when ctx ends.
func (p *proc) write(ctx context.Context, f *os.File, b []byte) error {
	p.inputMu.Lock()
	defer p.inputMu.Unlock()
	if err := f.SetWriteDeadline(time.Time{}); err != nil {
		return err
	}
	if ctx.Done() != nil {
		fired := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			_ = f.SetWriteDeadline(time.Unix(1, 0))
			close(fired)
		})
		defer func() {
			if !stop() {
				<-fired // the deadline is set; the next writer clears it
			}
		}()
	}
	_, err := f.Write(b)
	return err
}

// closeInput implements CloseStdin for one process.
func (p *proc) closeInput() error {
	if p.pty != nil {
		return connect.NewError(connect.CodeFailedPrecondition,
			fmt.Errorf("process %d runs in a PTY and has no stdin pipe: send 0x04 (Ctrl-D) as pty input to signal end of input", p.pid))
	}
	// Closing an already closed or disabled stdin is a no-op: the child
	// already sees end of input.
	p.closeStdin()
	return nil
}
