package network

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkSetupTeardown measures one sandbox network's whole life:
// Setup (namespace, TAP, veth, addresses, NAT, filter) then Teardown.
func BenchmarkSetupTeardown(b *testing.B) {
	w := newWorld(b)
	w.cfg.Logger = nil
	m := w.manager(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		h, err := m.Setup(ctx, fmt.Sprintf("bench-%d", i), AllowAll())
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Teardown(ctx, h); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSetup and BenchmarkTeardown time the halves (teardown is done
// outside the timer for the first and setup for the second).
func BenchmarkSetup(b *testing.B) {
	w := newWorld(b)
	w.cfg.Logger = nil
	m := w.manager(b)
	ctx := context.Background()
	var hs []Handle
	for i := 0; b.Loop(); i++ {
		h, err := m.Setup(ctx, fmt.Sprintf("bench-%d", i), AllowAll())
		if err != nil {
			b.Fatal(err)
		}
		hs = append(hs, h)
	}
	b.StopTimer()
	for _, h := range hs {
		if err := m.Teardown(ctx, h); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSetupTeardownParallel runs whole lives concurrently.
func BenchmarkSetupTeardownParallel(b *testing.B) {
	w := newWorld(b)
	w.cfg.Logger = nil
	m := w.manager(b)
	ctx := context.Background()
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h, err := m.Setup(ctx, fmt.Sprintf("bench-%d", n.Add(1)), AllowAll())
			if err != nil {
				b.Error(err)
				return
			}
			if err := m.Teardown(ctx, h); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkUpdatePolicy times replacing a running sandbox's filter.
func BenchmarkUpdatePolicy(b *testing.B) {
	w := newWorld(b)
	w.cfg.Logger = nil
	m := w.manager(b)
	ctx := context.Background()
	h, err := m.Setup(ctx, "bench-policy", AllowAll())
	if err != nil {
		b.Fatal(err)
	}
	p := Policy{DefaultDeny: true, Allow: prefixes("1.0.0.0/8", "8.8.8.8/32", "198.51.100.0/24")}
	for b.Loop() {
		if err := m.UpdatePolicy(ctx, h, p); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := m.Teardown(ctx, h); err != nil {
		b.Fatal(err)
	}
}
