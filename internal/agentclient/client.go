// Package agentclient is the control plane's gRPC client of host agents:
// one mTLS connection per host, with every gRPC status translated back
// into the errdefs vocabulary (errdefs.FromGRPC) at this edge. It must
// not import host-agent packages (internal/hostagent and below).
package agentclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/wrenn-dev/wrenn-sandbox/internal/errdefs"
	"github.com/wrenn-dev/wrenn-sandbox/internal/models"
	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

// chunkSize is the size of the WriteFile chunks sent to an agent.
const chunkSize = 64 << 10

// Client is one agent connection. It is safe for concurrent use.
type Client struct {
	endpoint string
	conn     *grpc.ClientConn
	c        pb.HostAgentServiceClient
}

// Dial returns a client of the agent at endpoint (host:port). The
// connection is made lazily, by the first call.
func Dial(endpoint string, tlsCfg *tls.Config) (*Client, error) {
	if tlsCfg == nil {
		return nil, errors.New("dial agent: mTLS config is required")
	}
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		return nil, fmt.Errorf("dial agent %s: %w", endpoint, err)
	}
	return &Client{endpoint: endpoint, conn: conn, c: pb.NewHostAgentServiceClient(conn)}, nil
}

// Endpoint is the address this client dials.
func (c *Client) Endpoint() string { return c.endpoint }

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("agent %s: %w", op, errdefs.FromGRPC(err))
}

// Info is what a heartbeat says about the agent.
type Info struct {
	HostID       string
	AgentVersion string
	Driver       string
	Capacity     models.Capacity
	Templates    []string
}

// Heartbeat asks the agent for its identity and capacity.
func (c *Client) Heartbeat(ctx context.Context) (Info, error) {
	r, err := c.c.Heartbeat(ctx, &pb.HeartbeatRequest{})
	if err != nil {
		return Info{}, wrap("heartbeat", err)
	}
	cp := r.GetCapacity()
	return Info{
		HostID: r.GetHostId(), AgentVersion: r.GetAgentVersion(), Driver: r.GetDriver(),
		Templates: r.GetTemplates(),
		Capacity: models.Capacity{
			TotalVCPUs: int(cp.GetTotalVcpus()), UsedVCPUs: int(cp.GetUsedVcpus()),
			TotalMemoryMB: cp.GetTotalMemoryMb(), UsedMemoryMB: cp.GetUsedMemoryMb(),
			TotalDiskMB: cp.GetTotalDiskMb(), UsedDiskMB: cp.GetUsedDiskMb(),
			SandboxCount: int(cp.GetSandboxCount()),
		},
	}, nil
}

// CreateSandbox creates and boots a sandbox; it returns once envd answers.
func (c *Client) CreateSandbox(ctx context.Context, req *pb.CreateSandboxRequest) (*pb.CreateSandboxResponse, error) {
	r, err := c.c.CreateSandbox(ctx, req)
	return r, wrap("create sandbox", err)
}

// DestroySandbox destroys a sandbox; an unknown one is errdefs.ErrNotFound.
func (c *Client) DestroySandbox(ctx context.Context, id string) error {
	_, err := c.c.DestroySandbox(ctx, &pb.DestroySandboxRequest{SandboxId: id})
	return wrap("destroy sandbox", err)
}

// PauseSandbox pauses a running sandbox.
func (c *Client) PauseSandbox(ctx context.Context, id string) error {
	_, err := c.c.PauseSandbox(ctx, &pb.PauseSandboxRequest{SandboxId: id})
	return wrap("pause sandbox", err)
}

// ResumeSandbox resumes a paused sandbox or wakes a hibernated one.
func (c *Client) ResumeSandbox(ctx context.Context, id string) error {
	_, err := c.c.ResumeSandbox(ctx, &pb.ResumeSandboxRequest{SandboxId: id})
	return wrap("resume sandbox", err)
}

// HibernateSandbox saves a running or paused sandbox into the agent's
// snapshot store and stops its VM; it returns where the snapshot is.
func (c *Client) HibernateSandbox(ctx context.Context, id string) (string, error) {
	r, err := c.c.HibernateSandbox(ctx, &pb.HibernateSandboxRequest{SandboxId: id})
	if err != nil {
		return "", wrap("hibernate sandbox", err)
	}
	return r.GetSnapshot().GetLocation(), nil
}

// ListSandboxes returns the agent's inventory.
func (c *Client) ListSandboxes(ctx context.Context) ([]*pb.Sandbox, error) {
	r, err := c.c.ListSandboxes(ctx, &pb.ListSandboxesRequest{})
	if err != nil {
		return nil, wrap("list sandboxes", err)
	}
	return r.GetSandboxes(), nil
}

// Exec runs a command and calls fn for every event in order (started,
// output chunks, exit last). An error from fn stops the stream and is
// returned as is.
func (c *Client) Exec(ctx context.Context, req *pb.ExecRequest, fn func(*pb.ExecResponse) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.c.Exec(ctx, req)
	if err != nil {
		return wrap("exec", err)
	}
	for {
		ev, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return wrap("exec", err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// WriteFile streams r to path in the sandbox. size is the expected length
// (-1 when unknown). A read error from r aborts the upload and is
// returned as is.
func (c *Client) WriteFile(ctx context.Context, hdr *pb.WriteFileHeader, r io.Reader) (*pb.WriteFileResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.c.WriteFile(ctx)
	if err != nil {
		return nil, wrap("write file", err)
	}
	if err := st.Send(&pb.WriteFileRequest{Msg: &pb.WriteFileRequest_Header{Header: hdr}}); err != nil {
		return nil, c.sendErr(st, err)
	}
	buf := make([]byte, chunkSize)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			chunk := append([]byte(nil), buf[:n]...)
			if err := st.Send(&pb.WriteFileRequest{Msg: &pb.WriteFileRequest_Chunk{Chunk: chunk}}); err != nil {
				return nil, c.sendErr(st, err)
			}
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("write file: read body: %w", rerr)
		}
	}
	resp, err := st.CloseAndRecv()
	return resp, wrap("write file", err)
}

// sendErr turns a failed Send into the server's status: Send reports
// io.EOF when the server ended the stream, and the reason is in
// CloseAndRecv.
func (c *Client) sendErr(st grpc.ClientStreamingClient[pb.WriteFileRequest, pb.WriteFileResponse], err error) error {
	if errors.Is(err, io.EOF) {
		_, err = st.CloseAndRecv()
	}
	return wrap("write file", err)
}

// ReadFile streams a file from the sandbox: first is called once with
// the file's size (-1 if unknown) before the first chunk is written to
// w, so the caller can still report an error before any byte is out.
func (c *Client) ReadFile(ctx context.Context, req *pb.ReadFileRequest, first func(size int64) error, w io.Writer) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := c.c.ReadFile(ctx, req)
	if err != nil {
		return 0, wrap("read file", err)
	}
	var total int64
	started := false
	for {
		msg, err := st.Recv()
		if errors.Is(err, io.EOF) {
			if !started {
				if err := first(0); err != nil {
					return 0, err
				}
			}
			return total, nil
		}
		if err != nil {
			return total, wrap("read file", err)
		}
		if !started {
			started = true
			size := msg.GetSize()
			if size == 0 && len(msg.GetChunk()) > 0 {
				size = -1
			}
			if err := first(size); err != nil {
				return 0, err
			}
		}
		n, err := w.Write(msg.GetChunk())
		total += int64(n)
		if err != nil {
			return total, fmt.Errorf("read file: write: %w", err)
		}
	}
}
