package firecracker

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// vsockStub accepts one connection, checks the CONNECT line and answers
// with reply in a single write.
func vsockStub(t *testing.T, reply string) (string, chan string) {
	t.Helper()
	sock := filepath.Join(shortDir(t, "hv"), "v.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		got <- line
		if reply != "" {
			_, _ = io.WriteString(c, reply)
		}
		time.Sleep(200 * time.Millisecond)
	}()
	return sock, got
}

func TestDialHybridVsock(t *testing.T) {
	cases := []struct {
		name, reply string
		wantErr     string
		wantData    string
	}{
		{name: "ok with guest bytes in the same write", reply: "OK 1073741824\nHTTP/1.1 200 OK\r\n", wantData: "HTTP/1.1 200 OK\r\n"},
		{name: "closed without ok", reply: "", wantErr: "no OK"},
		{name: "garbage answer", reply: "NOPE\n", wantErr: "unexpected vsock answer"},
		{name: "ok without port", reply: "OK \n", wantErr: "unexpected vsock answer"},
		{name: "endless line", reply: strings.Repeat("x", 5000), wantErr: "too long"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sock, got := vsockStub(t, tc.reply)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			c, err := DialHybridVsock(ctx, sock, 49983)
			if line := <-got; line != "CONNECT 49983\n" {
				t.Fatalf("sent %q", line)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, len(tc.wantData))
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != tc.wantData {
				t.Fatalf("read %q %v: bytes after OK were lost", buf, err)
			}
		})
	}
}

func TestDialHybridVsockHonoursContext(t *testing.T) {
	sock := filepath.Join(shortDir(t, "hv"), "v.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // accept and never answer, like a paused guest
		c, err := ln.Accept()
		if err == nil {
			time.Sleep(3 * time.Second)
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = DialHybridVsock(ctx, sock, 49983)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("took %s", d)
	}
}

func FuzzParseOK(f *testing.F) {
	for _, s := range []string{"OK 1073741824\n", "OK 0\n", "OK -1\n", "ok 5\n", "OK 5", "OK 99999999999\n", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseOK(s)
		if err != nil {
			return
		}
		// Whatever parses is exactly "OK <decimal u32>\n" (leading zeros allowed).
		if !strings.HasPrefix(s, "OK ") || !strings.HasSuffix(s, "\n") {
			t.Fatalf("accepted %q", s)
		}
		if again, err := ParseOK("OK " + itoaU(n) + "\n"); err != nil || again != n {
			t.Fatalf("round trip of %q: %d %v", s, again, err)
		}
	})
}

func itoaU(n uint32) string {
	if n == 0 {
		return "0"
	}
	var b [10]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}
