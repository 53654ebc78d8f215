package files

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// randReader yields n pseudo-random bytes without holding them.
type randReader struct {
	src *rand.ChaCha8
	n   int64
}

func newRandReader(seed byte, n int64) *randReader {
	var s [32]byte
	s[0] = seed
	return &randReader{src: rand.NewChaCha8(s), n: n}
}

func (r *randReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.n {
		p = p[:r.n]
	}
	n, _ := r.src.Read(p)
	r.n -= int64(n)
	return n, nil
}

func digest(t testing.TB, r io.Reader) ([32]byte, int64) {
	t.Helper()
	h := sha256.New()
	n, err := io.Copy(h, r)
	if err != nil {
		t.Fatal(err)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out, n
}

// heapPeak samples HeapAlloc until stopped and reports the highest value.
func heapPeak() (stop func() uint64) {
	var peak atomic.Uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		return peak.Load()
	}
}

// TestStreaming200MiB pushes 200 MiB through each upload form and back
// down, and checks the process heap never grows by more than 32 MiB: the
// handler (and the test's own client) stream, never buffer a file.
func TestStreaming200MiB(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 800 MiB through loopback")
	}
	const size = 200 << 20
	const budget = 32 << 20
	e := newEnv(t, Options{MaxUploadBytes: 1 << 40})
	want, _ := digest(t, newRandReader(7, size))

	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	stop := heapPeak()

	// Octet-stream with a chunked body.
	octet := filepath.Join(e.dir, "octet.bin")
	req, _ := http.NewRequest(http.MethodPost, e.url("/files", "path", octet), newRandReader(7, size))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, body := e.do(req)
	wantStatus(t, resp, body, http.StatusOK)

	// Multipart, generated on the fly through a pipe.
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		w, err := mw.CreateFormFile("file", "multi.bin")
		if err == nil {
			_, err = io.Copy(w, newRandReader(7, size))
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	req, _ = http.NewRequest(http.MethodPost, e.url("/files"), pr)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, body = e.do(req)
	wantStatus(t, resp, body, http.StatusOK)

	// Download both, hashing as the bytes arrive.
	for _, p := range []string{octet, filepath.Join(e.dir, "multi.bin")} {
		resp, err := e.c.Get(e.url("/files", "path", p))
		if err != nil {
			t.Fatal(err)
		}
		got, n := digest(t, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != size || got != want {
			t.Fatalf("%s: status %d, %d bytes, digest match %v", p, resp.StatusCode, n, got == want)
		}
	}

	peak := stop()
	growth := int64(peak) - int64(base.HeapAlloc)
	t.Logf("heap: base %d KiB, peak %d KiB, growth %d KiB over 800 MiB moved",
		base.HeapAlloc>>10, peak>>10, growth>>10)
	if growth > budget {
		t.Fatalf("heap grew by %d MiB (> %d MiB): something buffers whole files", growth>>20, budget>>20)
	}
}

// TestUploadNoSpace fills a 256 KiB tmpfs: the upload gets 507 and the
// partial new file is removed.
func TestUploadNoSpace(t *testing.T) {
	requireRoot(t)
	e := newEnv(t, Options{})
	mnt := filepath.Join(e.dir, "small")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=256k"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, 0); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	target := filepath.Join(mnt, "too-big.bin")
	req, _ := http.NewRequest(http.MethodPost, e.url("/files", "path", target), newRandReader(1, 4<<20))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, body := e.do(req)
	wantStatus(t, resp, body, http.StatusInsufficientStorage)
	if _, err := os.Stat(target); err == nil {
		t.Fatal("partial file left on a full filesystem")
	}
}

const benchSize = 64 << 20

// repeatReader yields n bytes cycling through block: cheap enough that the
// benchmark measures the handler, not the data source.
type repeatReader struct {
	block []byte
	off   int
	n     int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.n {
		p = p[:r.n]
	}
	n := 0
	for n < len(p) {
		c := copy(p[n:], r.block[r.off:])
		n += c
		r.off = (r.off + c) % len(r.block)
	}
	r.n -= int64(n)
	return n, nil
}

func BenchmarkUpload(b *testing.B) {
	e := newEnv(b, Options{})
	target := filepath.Join(e.dir, "bench.bin")
	u := e.url("/files", "path", target)
	block := make([]byte, 1<<20)
	newRandReader(3, int64(len(block))).Read(block)
	b.SetBytes(benchSize)
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, u, &repeatReader{block: block, n: benchSize})
		req.Header.Set("Content-Type", "application/octet-stream")
		req.ContentLength = benchSize
		resp, err := e.c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

func BenchmarkDownload(b *testing.B) {
	for _, enc := range []string{"identity", "gzip"} {
		b.Run(enc, func(b *testing.B) {
			e := newEnv(b, Options{})
			p := filepath.Join(e.dir, "bench.bin")
			f, err := os.Create(p)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(f, newRandReader(5, benchSize)); err != nil {
				b.Fatal(err)
			}
			f.Close()
			u := e.url("/files", "path", p)
			b.SetBytes(benchSize)
			b.ReportAllocs()
			for b.Loop() {
				req, _ := http.NewRequest(http.MethodGet, u, nil)
				req.Header.Set("Accept-Encoding", enc)
				resp, err := e.c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	}
}
