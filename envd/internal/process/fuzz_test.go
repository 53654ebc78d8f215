package process

import (
	"strings"
	"testing"

	pb "github.com/wrenn-dev/envd/internal/gen/process"
	"github.com/wrenn-dev/envd/internal/permissions"
)

// FuzzConfigEnv checks that any config either fails validation or yields
// an environment the kernel accepts: NAME=value entries without NUL, each
// name once, the request's value winning.
func FuzzConfigEnv(f *testing.F) {
	f.Add("sh", "a", "FOO", "bar", "PATH", "/x")
	f.Add("", "", "", "", "", "")
	f.Add("a\x00b", "x", "A=B", "v", "HOME", "\x00")
	f.Fuzz(func(t *testing.T, cmd, arg, k1, v1, k2, v2 string) {
		cfg := &pb.ProcessConfig{Cmd: cmd, Args: []string{arg}, Envs: map[string]string{k1: v1, k2: v2}}
		if err := validateConfig(cfg); err != nil {
			return
		}
		u := &permissions.User{Name: "u", Home: "/home/u"}
		env := buildEnv(u, map[string]string{k1: "init", "INIT": "1"}, cfg.GetEnvs())
		seen := map[string]bool{}
		for _, kv := range env {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" || strings.IndexByte(kv, 0) >= 0 {
				t.Fatalf("bad entry %q", kv)
			}
			if seen[k] {
				t.Fatalf("duplicate %q in %q", k, env)
			}
			seen[k] = true
			if want, ok := cfg.GetEnvs()[k]; ok && v != want {
				t.Fatalf("%s=%q, want request value %q", k, v, want)
			}
		}
		if keepaliveInterval(map[string][]string{"Keepalive-Ping-Interval": {arg}}) <= 0 {
			t.Fatal("non-positive keepalive")
		}
	})
}
