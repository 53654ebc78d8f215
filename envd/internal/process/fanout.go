package process

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	pb "github.com/wrenn-dev/envd/internal/gen/process"
)

// Fan-out. Every stream following a process (the Start stream and any
// number of Connect streams) is a subscriber with a bounded queue. The
// output readers push each event to every subscriber in turn:
//
//   - a queue with room takes the event at once;
//   - a full queue makes the reader wait, which stops it reading the pipe and
//     so throttles the child exactly like a terminal that cannot keep up
//     (no output is lost for a consumer that is slow but moving);
//   - a queue that stays full for slowAfter is a stalled consumer: it is
//     dropped (its stream ends with ResourceExhausted) so it cannot hold the
//     child and the other subscribers hostage for longer than that.
//
// With no subscriber at all (every client went away) output is read and
// discarded, so the child never blocks on a full pipe.
const (
	subscriberQueue  = 64 // events; at most 2 MiB of output per subscriber
	defaultSlowAfter = 15 * time.Second
)

// subscriber is one stream's queue. ch is never closed: the end of the
// stream is the end event itself, or dropped, or the consumer leaving.
type subscriber struct {
	ch      chan *pb.ProcessEvent
	gone    chan struct{} // closed by the consumer when it stops reading
	dropped chan struct{} // closed by a publisher that gave up on it
}

func newSubscriber() *subscriber {
	return &subscriber{
		ch:      make(chan *pb.ProcessEvent, subscriberQueue),
		gone:    make(chan struct{}),
		dropped: make(chan struct{}),
	}
}

// offer queues ev, waiting at most slowAfter for room. It reports false when
// the subscriber should be dropped.
func (s *subscriber) offer(ev *pb.ProcessEvent, slowAfter time.Duration) bool {
	select {
	case s.ch <- ev:
		return true
	case <-s.gone:
		return true
	default:
	}
	t := time.NewTimer(slowAfter)
	defer t.Stop()
	select {
	case s.ch <- ev:
		return true
	case <-s.gone:
		return true
	case <-t.C:
		return false
	}
}

// errDropped ends a stream whose consumer stalled.
var errDropped = errors.New("stream consumer too slow: output could not be delivered, reconnect to follow the process")

// follow sends queued events to a stream until the end event has been sent,
// the subscriber is dropped or ctx ends. When idle for keepalive it sends a
// keepalive event. send must not be called concurrently by anyone else.
func follow(ctx context.Context, sub *subscriber, keepalive time.Duration, send func(*pb.ProcessEvent) error) error {
	timer := time.NewTimer(keepalive)
	defer timer.Stop()
	for {
		select {
		case ev := <-sub.ch:
			if err := send(ev); err != nil {
				return err
			}
			if ev.GetEnd() != nil {
				return nil
			}
			timer.Reset(keepalive)
		case <-timer.C:
			if err := send(keepaliveEvent()); err != nil {
				return err
			}
			timer.Reset(keepalive)
		case <-sub.dropped:
			return connect.NewError(connect.CodeResourceExhausted, errDropped)
		case <-ctx.Done():
			return contextError(ctx)
		}
	}
}

// contextError turns the end of a request context into a connect error.
func contextError(ctx context.Context) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return connect.NewError(connect.CodeDeadlineExceeded, fmt.Errorf("request deadline exceeded: %w", err))
	}
	return connect.NewError(connect.CodeCanceled, fmt.Errorf("request cancelled: %w", err))
}

func startEvent(pid int) *pb.ProcessEvent {
	return &pb.ProcessEvent{Event: &pb.ProcessEvent_Start{Start: &pb.ProcessEvent_StartEvent{Pid: uint32(pid)}}}
}

func keepaliveEvent() *pb.ProcessEvent {
	return &pb.ProcessEvent{Event: &pb.ProcessEvent_Keepalive{Keepalive: &pb.ProcessEvent_KeepAlive{}}}
}

// output names the stream a chunk of output came from.
type output int

const (
	outStdout output = iota
	outStderr
	outPTY
)

func (o output) String() string {
	switch o {
	case outStdout:
		return "stdout"
	case outStderr:
		return "stderr"
	default:
		return "pty"
	}
}

func dataEvent(o output, b []byte) *pb.ProcessEvent {
	d := &pb.ProcessEvent_DataEvent{}
	switch o {
	case outStdout:
		d.Output = &pb.ProcessEvent_DataEvent_Stdout{Stdout: b}
	case outStderr:
		d.Output = &pb.ProcessEvent_DataEvent_Stderr{Stderr: b}
	default:
		d.Output = &pb.ProcessEvent_DataEvent_Pty{Pty: b}
	}
	return &pb.ProcessEvent{Event: &pb.ProcessEvent_Data{Data: d}}
}
