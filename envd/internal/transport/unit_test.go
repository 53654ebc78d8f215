package transport

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Both matchers (guest and the self-contained host copy) must agree with
// bytes.Index on every split of the input.
func TestMatchers(t *testing.T) {
	tests := []struct {
		name   string
		pat    string
		chunks []string
		want   int // offset in the joined input just past the first match, -1 if none
	}{
		{"single chunk", "WRENN-GO\n", []string{"xxWRENN-GO\nyy"}, 11},
		{"split across chunks", "WRENN-HELLO\n", []string{"abWRENN-HE", "LLO\nrest"}, 14},
		{"false start then match", "WRENN-HELLO\n", []string{"WRENN-WRENN-HELLO\n"}, 18},
		{"near miss", "WRENN-HELLO\n", []string{"WRENN-HELL\nWRENN-HELLO"}, -1},
		{"self-overlapping pattern", "aab", []string{"aa", "aab"}, 5},
		{"byte by byte", "WRENN-READY\n", []string{"W", "R", "E", "N", "N", "-", "R", "E", "A", "D", "Y", "\n"}, 12},
		{"breaks before", "WRENN-READY\n", []string{"\xff\xff\xff", "WRENN-READY\n"}, 15},
	}
	type feeder interface{ feed([]byte) int }
	for _, tt := range tests {
		for name, m := range map[string]feeder{"guest": newMatcher([]byte(tt.pat)), "host": newMatcher([]byte(tt.pat))} {
			t.Run(tt.name+"/"+name, func(t *testing.T) {
				got, off := -1, 0
				for _, c := range tt.chunks {
					if i := m.feed([]byte(c)); i >= 0 {
						got = off + i
						break
					}
					off += len(c)
				}
				if got != tt.want {
					t.Fatalf("match end %d, want %d", got, tt.want)
				}
			})
		}
	}

	rng := rand.New(rand.NewPCG(1, 2))
	pat := []byte("WRENN-HELLO\n")
	alphabet := []byte("WRENN-HELO\n\xff")
	for range 2000 {
		in := make([]byte, rng.IntN(80))
		for i := range in {
			in[i] = alphabet[rng.IntN(len(alphabet))]
		}
		want := bytes.Index(in, pat)
		if want >= 0 {
			want += len(pat)
		}
		for _, m := range []interface{ feed([]byte) int }{newMatcher(pat), newMatcher(pat)} {
			got, off := -1, 0
			for rest := in; len(rest) > 0; {
				k := 1 + rng.IntN(len(rest))
				if i := m.feed(rest[:k]); i >= 0 {
					got = off + i
					break
				}
				off += k
				rest = rest[k:]
			}
			if got != want {
				t.Fatalf("input %q: match end %d, want %d", in, got, want)
			}
		}
	}
}

// chunkReader returns one scripted result per Read.
type chunkReader struct {
	steps []struct {
		b   string
		err error
	}
	block chan struct{}
}

func (r *chunkReader) Read(b []byte) (int, error) {
	if len(r.steps) == 0 {
		<-r.block
		return 0, os.ErrClosed
	}
	s := r.steps[0]
	r.steps = r.steps[1:]
	return copy(b, s.b), s.err
}

func TestPumpHandsLeftoverToNextConsumer(t *testing.T) {
	r := &chunkReader{block: make(chan struct{})}
	for _, s := range []struct {
		b   string
		err error
	}{
		{"junk", nil},
		{"", io.EOF}, // no host: skipped by the handshake
		{"WRENN-HEL", nil},
		{"", errors.New("transient")},
		{"LO\nsession-bytes", nil},
		{"", io.EOF},
	} {
		r.steps = append(r.steps, s)
	}
	done := make(chan struct{})
	defer close(r.block)
	defer close(done)
	p := newPump(r, slog.New(slog.DiscardHandler), done)
	go p.run()

	if err := p.discardUntil(markHello, nil); err != nil {
		t.Fatal(err)
	}
	sess := make(chan struct{})
	b := make([]byte, 7)
	n, err := p.read(b, sess)
	if err != nil || string(b[:n]) != "session" {
		t.Fatalf("first session read %q, %v", b[:n], err)
	}
	// The session is cancelled: its read fails and the unread rest is
	// kept for whoever reads next.
	close(sess)
	if _, err := p.read(b, sess); !errors.Is(err, errConnClosed) {
		t.Fatalf("read after cancel = %v, want errConnClosed", err)
	}
	n, err = p.read(b, make(chan struct{}))
	if err != nil || string(b[:n]) != "-bytes" {
		t.Fatalf("next consumer read %q, %v", b[:n], err)
	}
	// A port EOF reaches a session reader as io.EOF.
	if _, err := p.read(b, make(chan struct{})); !errors.Is(err, io.EOF) {
		t.Fatalf("read at port EOF = %v, want io.EOF", err)
	}
}

func TestPumpCancelWhileBlocked(t *testing.T) {
	r := &chunkReader{block: make(chan struct{})}
	done := make(chan struct{})
	defer close(r.block)
	defer close(done)
	p := newPump(r, slog.New(slog.DiscardHandler), done)
	go p.run()
	cancel := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		_, err := p.read(make([]byte, 1), cancel)
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	close(cancel)
	select {
	case err := <-errc:
		if !errors.Is(err, errConnClosed) {
			t.Fatalf("blocked read after cancel = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancel did not unblock the read")
	}
}

func TestFindPort(t *testing.T) {
	root := t.TempDir()
	dev, sys := filepath.Join(root, "dev"), filepath.Join(root, "sys")
	mk := func(p, content string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk(filepath.Join(sys, "vport0p1", "name"), "org.qemu.guest_agent.0\n")
	mk(filepath.Join(sys, "vport0p2", "name"), "org.wrenn.envd\n")
	mk(filepath.Join(sys, "vport0p3", "name"), "org.wrenn.nodev\n")
	mk(filepath.Join(dev, "vport0p1"), "")
	mk(filepath.Join(dev, "vport0p2"), "")
	mk(filepath.Join(dev, "virtio-ports", "org.wrenn.udev"), "")

	tests := []struct {
		in      string
		want    string
		wantErr error
	}{
		{in: "org.wrenn.envd", want: filepath.Join(dev, "vport0p2")},
		{in: "org.wrenn.udev", want: filepath.Join(dev, "virtio-ports", "org.wrenn.udev")},
		{in: filepath.Join(dev, "vport0p1"), want: filepath.Join(dev, "vport0p1")},
		{in: "org.wrenn.none", wantErr: ErrNoSerialPort},
		{in: "org.wrenn.nodev", wantErr: os.ErrNotExist},
		{in: filepath.Join(dev, "missing"), wantErr: os.ErrNotExist},
		{in: "a/b", wantErr: errors.New("invalid")},
		{in: "", wantErr: errors.New("invalid")},
	}
	for _, tt := range tests {
		got, err := findPort(dev, sys, tt.in)
		if tt.wantErr == nil {
			if err != nil || got != tt.want {
				t.Errorf("findPort(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			continue
		}
		if err == nil {
			t.Errorf("findPort(%q) = %q, want an error", tt.in, got)
			continue
		}
		if (tt.wantErr == ErrNoSerialPort || tt.wantErr == os.ErrNotExist) && !errors.Is(err, tt.wantErr) {
			t.Errorf("findPort(%q) error %v, want %v", tt.in, err, tt.wantErr)
		}
	}
}

func TestListenTCP(t *testing.T) {
	l, err := ListenTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, _ := io.ReadAll(c)
	if string(b) != "hi" {
		t.Fatalf("read %q", b)
	}
	if _, err := ListenTCP(l.Addr().String()); err == nil {
		t.Fatal("second listen on the same port succeeded")
	}
}

func TestListenVsock(t *testing.T) {
	const port = 49983 + 1000
	l, err := ListenVsock(port)
	if err != nil {
		// No usable AF_VSOCK here: the error must be an ordinary error,
		// not a crash, and say what failed.
		t.Logf("vsock unavailable (as envd would log it): %v", err)
		return
	}
	defer l.Close()
	// A second listener on the same port fails cleanly too.
	if l2, err := ListenVsock(port); err == nil {
		l2.Close()
		t.Fatal("second vsock listen on the same port succeeded")
	} else {
		t.Logf("second listen: %v", err)
	}
	if l.Addr().Network() != "vsock" {
		t.Fatalf("Addr network %q", l.Addr().Network())
	}
}
