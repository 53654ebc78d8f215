package process

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"
)

// BenchmarkExecTrue measures a full Start round trip of `true` through a
// connect client on loopback: request, fork/exec, start, end.
func BenchmarkExecTrue(b *testing.B) {
	for _, proto := range []struct {
		name string
		h2c  bool
	}{{"http1", false}, {"h2c", true}} {
		b.Run(proto.name, func(b *testing.B) {
			h := newHarnessProto(b, proto.h2c)
			ctx := context.Background()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for b.Loop() {
				t0 := time.Now()
				r, err := h.run(ctx, startReq("true"))
				if err != nil {
					b.Fatal(err)
				}
				if r.end == nil || r.end.GetExitCode() != 0 {
					b.Fatalf("end %v", r.end)
				}
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(ms(lat[len(lat)/2]), "p50-ms")
			b.ReportMetric(ms(lat[min(len(lat)-1, len(lat)*99/100)]), "p99-ms")
		})
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkStdoutThroughput streams `head -c N /dev/zero` (1 GiB, 64 MiB
// with -short) through a connect client and reports MB/s.
func BenchmarkStdoutThroughput(b *testing.B) {
	size := int64(1 << 30)
	if testing.Short() {
		size = 64 << 20
	}
	for _, proto := range []struct {
		name string
		h2c  bool
	}{{"http1", false}, {"h2c", true}} {
		b.Run(proto.name, func(b *testing.B) {
			h := newHarnessProto(b, proto.h2c)
			ctx := context.Background()
			b.SetBytes(size)
			for b.Loop() {
				s, err := h.client.Start(ctx, connectReq(startReq("head", "-c", strconv.FormatInt(size, 10), "/dev/zero")))
				if err != nil {
					b.Fatal(err)
				}
				var n int64
				var ended bool
				for s.Receive() {
					ev := s.Msg().GetEvent()
					n += int64(len(ev.GetData().GetStdout()))
					ended = ended || ev.GetEnd() != nil
				}
				if err := s.Err(); err != nil || !ended || n != size {
					b.Fatalf("got %d bytes, ended %v, err %v", n, ended, err)
				}
				s.Close()
			}
		})
	}
}
