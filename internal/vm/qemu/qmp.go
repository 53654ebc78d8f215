package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// ErrQMPClosed is returned for commands whose reply never came because the
// QMP connection ended (QEMU exited or the socket was closed).
var ErrQMPClosed = errors.New("qmp connection closed")

// QMPError is an error reply from QEMU; Class is QEMU's error class
// ("GenericError", "CommandNotFound", "DeviceNotActive"...).
type QMPError struct {
	Command string
	Class   string
	Desc    string
}

func (e *QMPError) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// QMPEvent is an asynchronous QMP event such as STOP, RESUME or SHUTDOWN.
type QMPEvent struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data,omitempty"`
	Time time.Time       `json:"-"`
}

// QEMUVersion is the version the QMP greeting announced.
type QEMUVersion struct {
	Major   int    `json:"major"`
	Minor   int    `json:"minor"`
	Micro   int    `json:"micro"`
	Package string `json:"package,omitempty"`
}

func (v QEMUVersion) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro) }

// QMP is a client for one QEMU monitor socket. Commands may be issued
// concurrently: each carries an id and a reader goroutine routes replies by
// id, and events to subscribers. Close ends the connection; Done is closed
// once the reader has stopped for any reason.
type QMP struct {
	conn    net.Conn
	version QEMUVersion

	writeMu sync.Mutex

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan qmpMessage
	subs    map[int]chan QMPEvent
	nextSub int
	readErr error

	done chan struct{}
}

// qmpMessage is any message QEMU sends; which fields are set tells its kind.
type qmpMessage struct {
	Greeting *struct {
		Version struct {
			QEMU    QEMUVersion `json:"qemu"`
			Package string      `json:"package"`
		} `json:"version"`
	} `json:"QMP,omitempty"`
	Return    json.RawMessage `json:"return,omitempty"`
	Error     *qmpErrorBody   `json:"error,omitempty"`
	ID        json.RawMessage `json:"id,omitempty"`
	Event     string          `json:"event,omitempty"`
	Data      json.RawMessage `json:"data,omitempty"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp,omitempty"`
}

type qmpErrorBody struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

type qmpCommand struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
	ID        string `json:"id"`
}

// DialQMP connects to the QMP unix socket at path, reads the greeting and
// negotiates capabilities. ctx bounds the whole exchange.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("dial qmp: %w", err)
	}
	q, err := NewQMP(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// NewQMP runs the QMP greeting and capabilities negotiation on conn and
// starts the reader. On error the caller still owns conn.
func NewQMP(ctx context.Context, conn net.Conn) (*QMP, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
	}
	dec := json.NewDecoder(conn)
	var greet qmpMessage
	if err := dec.Decode(&greet); err != nil {
		return nil, fmt.Errorf("read qmp greeting: %w", err)
	}
	if greet.Greeting == nil {
		return nil, errors.New("read qmp greeting: first message is not a greeting")
	}
	_ = conn.SetReadDeadline(time.Time{})
	q := &QMP{
		conn:    conn,
		version: greet.Greeting.Version.QEMU,
		pending: map[string]chan qmpMessage{},
		subs:    map[int]chan QMPEvent{},
		done:    make(chan struct{}),
	}
	q.version.Package = greet.Greeting.Version.Package
	go q.readLoop(dec)
	if err := q.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		q.stop()
		return nil, fmt.Errorf("negotiate qmp capabilities: %w", err)
	}
	return q, nil
}

// Version is the QEMU version from the greeting.
func (q *QMP) Version() QEMUVersion { return q.version }

// Done is closed when the connection has ended.
func (q *QMP) Done() <-chan struct{} { return q.done }

// Close ends the connection. Pending commands fail with ErrQMPClosed.
func (q *QMP) Close() error {
	err := q.conn.Close()
	<-q.done
	return err
}

// stop closes the connection without waiting (used when the reader may not
// have started).
func (q *QMP) stop() { q.conn.Close() }

// Subscribe returns a channel receiving every event from now on, and a
// function that ends the subscription. Events are dropped for a subscriber
// whose buffer (64) is full rather than blocking the reader. The channel is
// closed when the connection ends or cancel is called.
func (q *QMP) Subscribe() (<-chan QMPEvent, func()) {
	ch := make(chan QMPEvent, 64)
	q.mu.Lock()
	if q.readErr != nil {
		q.mu.Unlock()
		close(ch)
		return ch, func() {}
	}
	id := q.nextSub
	q.nextSub++
	q.subs[id] = ch
	q.mu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			q.mu.Lock()
			if c, ok := q.subs[id]; ok {
				delete(q.subs, id)
				close(c)
			}
			q.mu.Unlock()
		})
	}
}

func (q *QMP) readLoop(dec *json.Decoder) {
	var err error
	for {
		var m qmpMessage
		if err = dec.Decode(&m); err != nil {
			break
		}
		switch {
		case m.Event != "":
			ev := QMPEvent{Name: m.Event, Data: m.Data}
			if m.Timestamp != nil {
				ev.Time = time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)
			}
			q.mu.Lock()
			for _, ch := range q.subs {
				select {
				case ch <- ev:
				default:
				}
			}
			q.mu.Unlock()
		case m.ID != nil:
			var id string
			if json.Unmarshal(m.ID, &id) != nil {
				continue
			}
			q.mu.Lock()
			ch := q.pending[id]
			delete(q.pending, id)
			q.mu.Unlock()
			if ch != nil {
				ch <- m
			}
		}
	}
	q.mu.Lock()
	q.readErr = err
	for id, ch := range q.pending {
		close(ch)
		delete(q.pending, id)
	}
	for id, ch := range q.subs {
		close(ch)
		delete(q.subs, id)
	}
	q.mu.Unlock()
	q.conn.Close()
	close(q.done)
}

// send writes one command and returns the channel its reply arrives on.
func (q *QMP) send(ctx context.Context, cmd string, args any) (chan qmpMessage, string, error) {
	q.mu.Lock()
	if q.readErr != nil {
		q.mu.Unlock()
		return nil, "", fmt.Errorf("qmp %s: %w", cmd, ErrQMPClosed)
	}
	q.nextID++
	id := "w" + strconv.FormatUint(q.nextID, 10)
	ch := make(chan qmpMessage, 1)
	q.pending[id] = ch
	q.mu.Unlock()

	data, err := json.Marshal(qmpCommand{Execute: cmd, Arguments: args, ID: id})
	if err != nil {
		q.forget(id)
		return nil, "", fmt.Errorf("qmp %s: encode: %w", cmd, err)
	}
	q.writeMu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		_ = q.conn.SetWriteDeadline(dl)
	} else {
		_ = q.conn.SetWriteDeadline(time.Time{})
	}
	_, err = q.conn.Write(append(data, '\n'))
	q.writeMu.Unlock()
	if err != nil {
		q.forget(id)
		return nil, "", fmt.Errorf("qmp %s: write: %w", cmd, err)
	}
	return ch, id, nil
}

func (q *QMP) forget(id string) {
	q.mu.Lock()
	delete(q.pending, id)
	q.mu.Unlock()
}

// Execute runs cmd with args (nil for none) and decodes the "return" value
// into out (nil to discard). An error reply is a *QMPError.
func (q *QMP) Execute(ctx context.Context, cmd string, args, out any) error {
	ch, id, err := q.send(ctx, cmd, args)
	if err != nil {
		return err
	}
	select {
	case m, ok := <-ch:
		if !ok {
			return fmt.Errorf("qmp %s: %w", cmd, ErrQMPClosed)
		}
		if m.Error != nil {
			return &QMPError{Command: cmd, Class: m.Error.Class, Desc: m.Error.Desc}
		}
		if out != nil && len(m.Return) > 0 {
			if err := json.Unmarshal(m.Return, out); err != nil {
				return fmt.Errorf("qmp %s: decode reply: %w", cmd, err)
			}
		}
		return nil
	case <-ctx.Done():
		q.forget(id)
		return fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	}
}

// Quit asks QEMU to exit. QEMU may send SHUTDOWN and close the socket
// before (or instead of) the reply, so the connection ending after the
// command was sent also counts as success.
func (q *QMP) Quit(ctx context.Context) error {
	ch, id, err := q.send(ctx, "quit", nil)
	if err != nil {
		return err
	}
	select {
	case m, ok := <-ch:
		if ok && m.Error != nil {
			return &QMPError{Command: "quit", Class: m.Error.Class, Desc: m.Error.Desc}
		}
		return nil
	case <-q.done:
		return nil
	case <-ctx.Done():
		q.forget(id)
		return fmt.Errorf("qmp quit: %w", ctx.Err())
	}
}

// StatusInfo is the reply of query-status.
type StatusInfo struct {
	Status  string `json:"status"`
	Running bool   `json:"running"`
}

// QueryStatus runs query-status.
func (q *QMP) QueryStatus(ctx context.Context) (StatusInfo, error) {
	var s StatusInfo
	err := q.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// MigrationInfo is the part of query-migrate's reply the driver uses.
type MigrationInfo struct {
	Status    string `json:"status"`
	ErrorDesc string `json:"error-desc,omitempty"`
	TotalTime int64  `json:"total-time,omitempty"`
	RAM       *struct {
		Transferred int64 `json:"transferred"`
		Total       int64 `json:"total"`
	} `json:"ram,omitempty"`
}

// QueryMigrate runs query-migrate.
func (q *QMP) QueryMigrate(ctx context.Context) (MigrationInfo, error) {
	var m MigrationInfo
	err := q.Execute(ctx, "query-migrate", nil, &m)
	return m, err
}
