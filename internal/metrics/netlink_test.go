package metrics

import (
	"context"
	"testing"
)

func TestNetlinkReader(t *testing.T) {
	tn := newTestNet(t)
	ctx := context.Background()
	r := NetlinkReader{}
	names := []string{tn.host, tn.peer, "absent0"}
	before, err := r.Counters(ctx, tn.path, names)
	if err != nil {
		t.Fatalf("Counters: %v", err)
	}
	if _, ok := before["absent0"]; ok {
		t.Fatal("a missing interface has counters")
	}
	sentH := tn.send(t, tn.host, 10, 1000)
	sentP := tn.send(t, tn.peer, 5, 600)
	after, err := r.Counters(ctx, tn.path, names)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name       string
		got, want  uint64
		gotP, wntP uint64
	}{
		{"host tx", after[tn.host].TxBytes - before[tn.host].TxBytes, sentH, after[tn.host].TxPackets - before[tn.host].TxPackets, 10},
		{"peer rx", after[tn.peer].RxBytes - before[tn.peer].RxBytes, sentH, after[tn.peer].RxPackets - before[tn.peer].RxPackets, 10},
		{"peer tx", after[tn.peer].TxBytes - before[tn.peer].TxBytes, sentP, after[tn.peer].TxPackets - before[tn.peer].TxPackets, 5},
		{"host rx", after[tn.host].RxBytes - before[tn.host].RxBytes, sentP, after[tn.host].RxPackets - before[tn.host].RxPackets, 5},
	}
	for _, c := range cases {
		if c.got != c.want || c.gotP != c.wntP {
			t.Errorf("%s: +%d bytes / +%d packets, want +%d / +%d", c.name, c.got, c.gotP, c.want, c.wntP)
		}
	}
	// The namespace is private: our own namespace has no such interface.
	own, err := r.Counters(ctx, "", []string{tn.host, "lo"})
	if err != nil {
		t.Fatalf("Counters in own netns: %v", err)
	}
	if _, ok := own[tn.host]; ok {
		t.Fatalf("%s visible outside its namespace", tn.host)
	}
	if _, ok := own["lo"]; !ok {
		t.Fatal("lo missing in own namespace")
	}
	if _, err := r.Counters(ctx, "/nonexistent/netns", names); err == nil {
		t.Fatal("Counters in a missing netns succeeded")
	}
}
