package agentclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

// Terminal runs an interactive PTY session: start goes first, then every
// request from in (input or resize) in order; every response (started,
// output, exit last) goes to out. Closing in half-closes the stream (the
// agent then ends the session). It returns when the agent ends the
// stream, ctx ends, or out fails (that error is returned as is).
func (c *Client) Terminal(ctx context.Context, start *pb.TerminalStart, in <-chan *pb.TerminalRequest,
	out func(*pb.TerminalResponse) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.c.Terminal(ctx)
	if err != nil {
		return wrap("terminal", err)
	}
	if err := st.Send(&pb.TerminalRequest{Event: &pb.TerminalRequest_Start{Start: start}}); err != nil && !errors.Is(err, io.EOF) {
		return wrap("terminal", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case req, ok := <-in:
				if !ok {
					_ = st.CloseSend()
					return
				}
				if err := st.Send(req); err != nil {
					return // the reason comes from Recv
				}
			}
		}
	})
	defer wg.Wait()
	defer cancel()
	for {
		ev, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return wrap("terminal", err)
		}
		if err := out(ev); err != nil {
			return fmt.Errorf("terminal: %w", err)
		}
	}
}
