package e2e

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
)

// BenchmarkExecTrue is the round trip of starting `true` and reading its
// stream to the end event, over Connect on loopback. It reports p50 and p99.
func BenchmarkExecTrue(b *testing.B) {
	e := startEnvd(b)
	pc := e.process()
	ctx := context.Background()
	// Warm the connection pool.
	run(b, ctx, pc, startReq("true"))
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		run(b, ctx, pc, startReq("true"))
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportPercentiles(b, lat)
}

// BenchmarkExecTrueJSON is the same with the Connect JSON codec the E2B SDKs use.
func BenchmarkExecTrueJSON(b *testing.B) {
	e := startEnvd(b)
	pc := e.process(connect.WithProtoJSON())
	ctx := context.Background()
	run(b, ctx, pc, startReq("true"))
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		run(b, ctx, pc, startReq("true"))
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportPercentiles(b, lat)
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[int(float64(len(lat)-1)*p)].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkStdout1G streams `head -c 1G /dev/zero` through the process
// stream (binary Connect codec).
func BenchmarkStdout1G(b *testing.B) {
	e := startEnvd(b)
	pc := e.process()
	ctx := context.Background()
	const size = 1 << 30
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		s := must(pc.Start(ctx, startReq("head", "-c", "1G", "/dev/zero")))
		var n int
		for s.Receive() {
			n += len(s.Msg().GetEvent().GetData().GetStdout())
		}
		s.Close()
		if n != size {
			b.Fatalf("got %d bytes", n)
		}
	}
}

// BenchmarkFileUpload and BenchmarkFileDownload move 256 MiB through
// POST/GET /files on loopback.
func BenchmarkFileUpload(b *testing.B) {
	e := startEnvd(b)
	const size = 256 << 20
	target := filepath.Join(b.TempDir(), "up.bin")
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		resp := must(http.Post(filesURL(e, target), "application/octet-stream", io.LimitReader(zeros{}, size)))
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

func BenchmarkFileDownload(b *testing.B) {
	e := startEnvd(b)
	const size = 256 << 20
	target := filepath.Join(b.TempDir(), "down.bin")
	resp := must(http.Post(filesURL(e, target), "application/octet-stream", io.LimitReader(zeros{}, size)))
	resp.Body.Close()
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		resp := must(http.Get(filesURL(e, target)))
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if n != size {
			b.Fatalf("got %d bytes", n)
		}
	}
}

// BenchmarkIdleRSS reports envd's resident memory after start-up and one
// request, in KiB.
func BenchmarkIdleRSS(b *testing.B) {
	e := startEnvd(b)
	run(b, context.Background(), e.process(), startReq("true"))
	time.Sleep(200 * time.Millisecond)
	for range b.N {
	}
	b.ReportMetric(float64(e.statusKiB("VmRSS")), "rss-KiB")
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
