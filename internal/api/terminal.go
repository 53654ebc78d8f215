package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/store"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

// Terminaler is the optional agent ability behind the WebSocket terminal
// (*agentclient.Client has it). Agents without it answer 501.
type Terminaler interface {
	Terminal(ctx context.Context, start *pb.TerminalStart, in <-chan *pb.TerminalRequest,
		out func(*pb.TerminalResponse) error) error
}

// TermControl is a text message of the terminal WebSocket, both ways:
// client → server "resize" {cols, rows} and "input" {data}; server →
// client "started" {pid} and, last, "exit" {exit_code, status} or
// "error" {code, message}. Binary messages are raw bytes: stdin from the
// client, PTY output from the server.
type TermControl struct {
	Type     string `json:"type"`
	Cols     uint32 `json:"cols,omitempty"`
	Rows     uint32 `json:"rows,omitempty"`
	Data     string `json:"data,omitempty"`
	PID      uint32 `json:"pid,omitempty"`
	ExitCode *int   `json:"exit_code,omitempty"`
	Status   string `json:"status,omitempty"`
	Code     string `json:"code,omitempty"`
	Message  string `json:"message,omitempty"`
}

func querySize(r *http.Request, name string, def uint32) (uint32, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil || n == 0 || n > 1000 {
		return 0, errdefs.Errorf(errdefs.ErrInvalidArgument, "%s %q: want 1-1000", name, v)
	}
	return uint32(n), nil
}

func (s *Server) terminal(w http.ResponseWriter, r *http.Request) {
	cols, err := querySize(r, "cols", 80)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	rows, err := querySize(r, "rows", 24)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	sb, agent, err := s.running(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	term, ok := agent.(Terminaler)
	if !ok {
		s.writeError(w, r, errdefs.Errorf(errdefs.ErrNotImplemented, "this host has no terminal support"))
		return
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		s.log.Debug("terminal upgrade failed", "sandbox_id", sb.ID, "err", err)
		return // Accept answered already
	}
	defer s.busy(sb.ID)()
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	start := time.Now()
	var bytesIn atomic.Int64
	var bytesOut int64
	in := make(chan *pb.TerminalRequest, 16)
	go func() {
		defer close(in)
		for {
			typ, msg, err := conn.Read(ctx)
			if err != nil {
				return
			}
			req, err := termRequest(typ, msg)
			if err != nil {
				_ = conn.Close(websocket.StatusUnsupportedData, err.Error())
				cancel()
				return
			}
			if d, ok := req.GetEvent().(*pb.TerminalRequest_Input); ok {
				bytesIn.Add(int64(len(d.Input)))
			}
			select {
			case in <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	var exit *pb.TerminalExit
	err = term.Terminal(ctx, &pb.TerminalStart{SandboxId: sb.ID, Cmd: r.URL.Query().Get("cmd"),
		Size: &pb.TerminalSize{Cols: cols, Rows: rows}}, in,
		func(ev *pb.TerminalResponse) error {
			switch e := ev.GetEvent().(type) {
			case *pb.TerminalResponse_Started:
				return writeControl(ctx, conn, TermControl{Type: "started", PID: e.Started.GetPid()})
			case *pb.TerminalResponse_Output:
				bytesOut += int64(len(e.Output))
				return conn.Write(ctx, websocket.MessageBinary, e.Output)
			case *pb.TerminalResponse_Exit:
				exit = e.Exit
			}
			return nil
		})
	var exitCode *int
	switch {
	case exit != nil:
		code := int(exit.GetExitCode())
		exitCode = &code
		_ = writeControl(ctx, conn, TermControl{Type: "exit", ExitCode: &code, Status: exit.GetStatus()})
		_ = conn.Close(websocket.StatusNormalClosure, "")
	case err != nil && ctx.Err() == nil:
		_, code, msg := classify(err)
		_ = writeControl(ctx, conn, TermControl{Type: "error", Code: code, Message: msg})
		_ = conn.Close(websocket.StatusInternalError, code)
	}
	s.record(r, sb, store.AuditEvent{Type: store.AuditTerminal, Command: truncate(r.URL.Query().Get("cmd"), 1024),
		ExitCode: exitCode, DurationMS: time.Since(start).Milliseconds(), BytesIn: bytesIn.Load(), BytesOut: bytesOut,
		Error: errText(ignoreCanceled(err), "")})
}

func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, errdefs.ErrCanceled) {
		return nil
	}
	return err
}

func writeControl(ctx context.Context, conn *websocket.Conn, c TermControl) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return conn.Write(ctx, websocket.MessageText, b)
}

// termRequest turns one client message into an agent request.
func termRequest(typ websocket.MessageType, msg []byte) (*pb.TerminalRequest, error) {
	if typ == websocket.MessageBinary {
		return &pb.TerminalRequest{Event: &pb.TerminalRequest_Input{Input: msg}}, nil
	}
	var c TermControl
	if err := json.Unmarshal(msg, &c); err != nil {
		return nil, errors.New("text messages must be JSON control objects")
	}
	switch c.Type {
	case "input":
		return &pb.TerminalRequest{Event: &pb.TerminalRequest_Input{Input: []byte(c.Data)}}, nil
	case "resize":
		if c.Cols == 0 || c.Rows == 0 || c.Cols > 1000 || c.Rows > 1000 {
			return nil, errors.New("resize: cols and rows must be 1-1000")
		}
		return &pb.TerminalRequest{Event: &pb.TerminalRequest_Resize{Resize: &pb.TerminalSize{Cols: c.Cols, Rows: c.Rows}}}, nil
	}
	return nil, errors.New("unknown control message type")
}
