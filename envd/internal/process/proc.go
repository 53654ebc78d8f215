package process

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	pb "github.com/wrenn-dev/envd/internal/gen/process"
	"github.com/wrenn-dev/envd/internal/reaper"
)

// chunkSize bounds the payload of one data event. E2B's envd uses 32 KiB;
// clients accept any size, and 256 KiB cuts per-event overhead enough to
// raise stdout throughput by about 15% on loopback. A read returns what the
// pipe holds, so small outputs still go out at once.
const chunkSize = 256 << 10

// Draining output after the process exits. Everything the process wrote
// before it exited is already in the pipe (or PTY buffer), so it is read
// and delivered before the end event. But a child that outlives the process
// (`cmd &`, a daemon) keeps the pipe open, and waiting for EOF as E2B does
// would hold the end event until that child exits. So once the process has
// exited, output keeps flowing until EOF, or until the pipe has stayed empty
// for drainGrace, or until more than the pipe's capacity has been read since
// the exit (by then all of the exited process's output has been read, since
// the pipe is FIFO). Then the end event is sent; the pipe is still read and
// discarded until EOF, so surviving children never block or die of SIGPIPE,
// and its descriptor is closed when they are gone.
const (
	defaultDrainGrace = 100 * time.Millisecond
	ptyDrainLimit     = 1 << 20 // above any tty buffer
	pipeDrainLimit    = 1 << 20 // used when F_GETPIPE_SZ fails
)

// proc is one process started by the service, from spawn until its end
// event is retained and finally forgotten.
type proc struct {
	pid    int
	seq    uint64
	tag    *string
	config *pb.ProcessConfig
	log    *slog.Logger

	slowAfter  time.Duration
	drainGrace time.Duration

	// Input. pty is the PTY master (nil without a PTY); it is also read by
	// a pump and closed by releasePTY. stdin is the pipe's write end (nil
	// when stdin is disabled or a PTY is used), closed at exit.
	inputMu     sync.Mutex // serialises writes so input stays in order
	pty         *os.File
	releasePTY  func() // see closeAfter
	stdin       *os.File
	stdinClosed atomic.Bool

	lifetime *time.Timer // kills the process at the Start deadline

	exited    atomic.Bool // the leader has been reaped
	outputs   []*os.File
	delivered sync.WaitGroup // one per output, done when delivery stops

	mu      sync.Mutex
	subs    []*subscriber // copy-on-write
	end     *pb.ProcessEvent
	endedAt time.Time
}

// subscribe adds a follower. If the process has already ended it returns
// the end event instead.
func (p *proc) subscribe() (*subscriber, *pb.ProcessEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.end != nil {
		return nil, p.end
	}
	s := newSubscriber()
	p.subs = append(slices.Clip(p.subs), s)
	return s, nil
}

// unsubscribe is called by the follower when it stops reading.
func (p *proc) unsubscribe(s *subscriber) {
	close(s.gone)
	p.remove(s)
}

// remove takes s out of the subscriber list and reports whether it was in.
func (p *proc) remove(s *subscriber) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := slices.Index(p.subs, s)
	if i < 0 {
		return false
	}
	p.subs = slices.Delete(slices.Clone(p.subs), i, i+1)
	return true
}

// publish hands ev to every current subscriber, dropping stalled ones.
func (p *proc) publish(ev *pb.ProcessEvent) {
	p.mu.Lock()
	subs := p.subs
	p.mu.Unlock()
	for _, s := range subs {
		if !s.offer(ev, p.slowAfter) && p.remove(s) {
			p.log.Warn("dropping stalled output stream", "after", p.slowAfter)
			close(s.dropped)
		}
	}
}

// finish records the end event, has retire move the process to the ended
// list, and then delivers the event to every subscriber.
func (p *proc) finish(end *pb.ProcessEvent, retire func(*proc)) {
	p.mu.Lock()
	p.end = end
	p.endedAt = time.Now()
	subs := p.subs
	p.subs = nil
	p.mu.Unlock()
	// Retire before anyone hears of the end: a client that saw it and
	// then signals the process must get "already exited".
	retire(p)
	for _, s := range subs {
		if !s.offer(end, p.slowAfter) {
			close(s.dropped)
		}
	}
}

// ended reports whether the end event has been published.
func (p *proc) ended() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.end != nil
}

// pump reads one output until EOF and publishes it in chunks, then calls
// release. See defaultDrainGrace for what happens after the process exits.
func (p *proc) pump(f *os.File, o output, release func()) {
	defer release()
	buf := make([]byte, chunkSize)
	delivering := true
	stop := func() {
		delivering = false
		p.delivered.Done()
		_ = f.SetReadDeadline(time.Time{})
	}
	var sinceExit, limit int
	for {
		exitedBefore := p.exited.Load()
		n, err := f.Read(buf)
		if n > 0 && delivering {
			p.publish(dataEvent(o, bytes.Clone(buf[:n])))
			if exitedBefore {
				if limit == 0 {
					limit = drainLimit(f, o)
				}
				sinceExit += n
			}
			switch {
			case exitedBefore && sinceExit >= limit:
				stop()
			case p.exited.Load():
				_ = f.SetReadDeadline(time.Now().Add(p.drainGrace))
			}
		}
		if err == nil {
			continue
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			switch {
			case !delivering:
				_ = f.SetReadDeadline(time.Time{})
			case pending(f) > 0:
				// The deadline fired before the poller woke us for data
				// that is there (a busy machine): keep reading.
				_ = f.SetReadDeadline(time.Now().Add(p.drainGrace))
			default:
				stop()
			}
			continue
		}
		// EOF, or EIO from a PTY master once every slave is closed.
		if !errors.Is(err, syscall.EIO) && !errors.Is(err, os.ErrClosed) && !errors.Is(err, io.EOF) {
			p.log.Debug("output read ended", "stream", o.String(), "err", err)
		}
		break
	}
	if delivering {
		p.delivered.Done()
	}
}

// pending is how many bytes are ready to be read from f (TIOCINQ, alias
// FIONREAD, which pipes and PTY masters both answer).
func pending(f *os.File) int {
	n := 0
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			if v, err := unix.IoctlGetInt(int(fd), unix.TIOCINQ); err == nil {
				n = v
			}
		})
	}
	return n
}

// closeAfter returns a func that closes f on its n-th call. The PTY master
// is closed only once the leader has exited and its output has been read:
// closing it hangs up the terminal, and a process that closed its own tty
// descriptors (the master then reads EIO) but has not exited yet would die
// of SIGHUP.
func closeAfter(f *os.File, n int32) func() {
	var left atomic.Int32
	left.Store(n)
	return func() {
		if left.Add(-1) == 0 {
			_ = f.Close()
		}
	}
}

// drainLimit is how many bytes may still belong to the exited process.
func drainLimit(f *os.File, o output) int {
	if o == outPTY {
		return ptyDrainLimit
	}
	limit := pipeDrainLimit
	if rc, err := f.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			if n, err := unix.FcntlInt(fd, unix.F_GETPIPE_SZ, 0); err == nil && n > 0 {
				limit = n
			}
		})
	}
	return limit
}

// wait waits for the leader to exit, lets the output drain, then publishes
// the end event (see finish).
func (p *proc) wait(exit <-chan reaper.Exit, retire func(*proc)) {
	ex := <-exit
	if p.lifetime != nil {
		p.lifetime.Stop()
	}
	p.exited.Store(true)
	deadline := time.Now().Add(p.drainGrace)
	for _, f := range p.outputs {
		_ = f.SetReadDeadline(deadline) // fails harmlessly if already at EOF
	}
	p.delivered.Wait()
	p.closeStdin()
	if p.releasePTY != nil {
		p.releasePTY()
	}
	end := endEvent(ex)
	p.finish(end, retire)
	p.log.Info("process ended", "status", end.GetEnd().GetStatus())
}

// endEvent describes an exit the way Go's os.ProcessState does, which is
// what E2B clients see: "exit status 3", "signal: killed". error is set for
// anything but a clean exit.
func endEvent(ex reaper.Exit) *pb.ProcessEvent {
	ws := ex.Status
	var status string
	switch {
	case ws.Exited():
		status = "exit status " + itoa(ws.ExitStatus())
	case ws.Signaled():
		status = "signal: " + ws.Signal().String()
		if ws.CoreDump() {
			status += " (core dumped)"
		}
	default:
		status = "unknown wait status " + itoa(int(ws))
	}
	e := &pb.ProcessEvent_EndEvent{
		ExitCode: int32(ex.Code()),
		Exited:   ws.Exited(),
		Status:   status,
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		e.Error = &status
	}
	return &pb.ProcessEvent{Event: &pb.ProcessEvent_End{End: e}}
}

// signal sends sig to the process group (and, for a PTY, to the whole
// session, since an interactive shell puts its jobs in their own groups),
// so children die with the leader.
func (p *proc) signal(sig unix.Signal) error {
	err := unix.Kill(-p.pid, sig)
	if p.pty != nil {
		killSession(p.pid, sig)
	}
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	return nil
}

// closeStdin closes the stdin pipe once; later calls do nothing.
func (p *proc) closeStdin() {
	if p.stdin != nil && p.stdinClosed.CompareAndSwap(false, true) {
		_ = p.stdin.Close()
	}
}
