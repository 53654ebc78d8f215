package integration

import (
	"context"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/envdclient"
	"github.com/wrenn-dev/wrenn-sandbox/internal/filesystem/fstest"
	"github.com/wrenn-dev/wrenn-sandbox/internal/snapshot"
)

// TestPython311 boots the python311 template (Debian bookworm from the
// images builder: images/out, built by this test with images/build.sh when
// missing) cold, running Python there before the template snapshot, then
// creates a sandbox from the snapshot and runs python3 in it.
func TestPython311(t *testing.T) {
	const tmpl = "python311"
	reg := fstest.BuiltRegistry(t, tmpl)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	m := tmplManager(t, reg, func(c *snapshot.Config) {
		// The cold-booted VM must run Python too, or the build fails.
		c.Warmup = `test "$(python3 -c 'print(6*7)')" = 42`
	})
	spec := tmplSpec(t, "it-python", tmpl)
	spec.Init = envdclient.InitRequest{AccessToken: "py-token", EnvVars: map[string]string{"GREETING": "hi"}}
	start := time.Now()
	sb, err := m.CreateFromTemplate(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Destroy(context.Background())
	t.Logf("template %s %s: cold boot to envd %v, build %v; sandbox %+v (total %v)", tmpl, sb.Template.Key.Version,
		sb.Template.BootTook, sb.Template.BuildTook, sb.Timings, time.Since(start))

	tests := []struct{ script, want string }{
		{`python3 -c 'print(6*7)'`, "42\n"},
		{`python3 -c 'import os, sys; print(sys.version_info[:2] == (3, 11), os.environ["GREETING"])'`, "True hi\n"},
		{`python3 -m venv --without-pip /tmp/venv && /tmp/venv/bin/python -c 'import sys; print(sys.prefix)'`, "/tmp/venv\n"},
	}
	for _, tc := range tests {
		if got := guestSh(t, ctx, sb.Envd, tc.script); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.script, got, tc.want)
		}
	}
}
