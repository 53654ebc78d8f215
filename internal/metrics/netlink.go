package metrics

import (
	"context"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// NetlinkReader reads interface counters with one RTM_GETLINK dump in the
// target namespace. It opens its netlink socket inside that namespace, so
// it works for a namespace this process is not in (the sysfs statistics
// files only show the namespace sysfs was mounted from). Stateless and
// safe for concurrent use.
type NetlinkReader struct{}

var _ NetReader = NetlinkReader{}

// Counters implements NetReader.
func (NetlinkReader) Counters(ctx context.Context, netnsPath string, names []string) (map[string]NetCounters, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h, err := openHandle(netnsPath)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links in netns %q: %w", netnsPath, err)
	}
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := make(map[string]NetCounters, len(names))
	for _, l := range links {
		a := l.Attrs()
		if !want[a.Name] || a.Statistics == nil {
			continue
		}
		out[a.Name] = NetCounters{
			RxBytes:   a.Statistics.RxBytes,
			TxBytes:   a.Statistics.TxBytes,
			RxPackets: a.Statistics.RxPackets,
			TxPackets: a.Statistics.TxPackets,
		}
	}
	return out, nil
}

func openHandle(netnsPath string) (*netlink.Handle, error) {
	if netnsPath == "" {
		h, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("open netlink: %w", err)
		}
		return h, nil
	}
	ns, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", netnsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("open netlink in netns %s: %w", netnsPath, err)
	}
	return h, nil
}
