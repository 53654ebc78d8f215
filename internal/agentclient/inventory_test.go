package agentclient

import (
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/wrenn-dev/wrenn-sandbox/proto/hostagent/gen"
)

// inventory is the scripted agent's sandboxes, shared between the gRPC
// server goroutines and the test.
type inventory struct {
	mu        sync.Mutex
	sbs       map[string]*pb.Sandbox
	destroyed []string
	failing   bool // heartbeats fail
}

func newInventory(sbs ...*pb.Sandbox) *inventory {
	inv := &inventory{sbs: map[string]*pb.Sandbox{}}
	for _, sb := range sbs {
		inv.put(sb)
	}
	return inv
}

func (i *inventory) put(sb *pb.Sandbox) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.sbs[sb.GetSandboxId()] = sb
}

func (i *inventory) list() []*pb.Sandbox {
	i.mu.Lock()
	defer i.mu.Unlock()
	out := make([]*pb.Sandbox, 0, len(i.sbs))
	for _, sb := range i.sbs {
		out = append(out, proto.Clone(sb).(*pb.Sandbox))
	}
	return out
}

func (i *inventory) destroy(id string) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if _, ok := i.sbs[id]; !ok {
		return status.Errorf(codes.NotFound, "sandbox %s", id)
	}
	delete(i.sbs, id)
	i.destroyed = append(i.destroyed, id)
	return nil
}

func (i *inventory) setDown(v bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.failing = v
}

func (i *inventory) down() bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.failing
}

func (i *inventory) destroyedIDs() []string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return append([]string(nil), i.destroyed...)
}
