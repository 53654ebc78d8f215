package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"

	"github.com/vishvananda/netns"
)

// tapEnv makes the test binary act as a jailed VMM: join a sandbox
// namespace, drop to an unprivileged user, attach to tap0.
const tapEnv = "WRN_NETWORK_TAP_HELPER"

type tapJob struct {
	NetNS    string
	UID, GID int
}

func tapHelper(v string) int {
	runtime.LockOSThread() // never unlocked: the process exits
	var job tapJob
	if err := json.Unmarshal([]byte(v), &job); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ns, err := netns.GetFromPath(job.NetNS)
	if err == nil {
		err = netns.Set(ns)
	}
	if err == nil {
		err = syscall.Setgroups(nil)
	}
	if err == nil {
		err = syscall.Setgid(job.GID)
	}
	if err == nil {
		err = syscall.Setuid(job.UID)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "become the vmm:", err)
		return 1
	}
	f, err := openTap(TapName)
	if err != nil {
		fmt.Fprintln(os.Stderr, "attach:", err)
		return 5
	}
	f.Close()
	return 0
}

func TestTapOwnerLetsJailedVMMAttach(t *testing.T) {
	const vmmUID = 4321
	tests := []struct {
		name   string
		owner  *TapOwner
		attach bool
	}{
		{"owned by the vmm user", &TapOwner{UID: vmmUID, GID: vmmUID}, true},
		{"user matches, group does not", &TapOwner{UID: vmmUID, GID: vmmUID + 1}, false},
		{"unset: root only", nil, false},
		{"owned by another user", &TapOwner{UID: vmmUID + 1, GID: vmmUID + 1}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			w.cfg.TapOwner = tc.owner
			m := w.manager(t)
			h, err := m.Setup(context.Background(), "sbx-tap", AllowAll())
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := m.Teardown(context.Background(), h); err != nil {
					t.Error(err)
				}
			}()
			job, _ := json.Marshal(tapJob{NetNS: h.NetNSPath, UID: vmmUID, GID: vmmUID})
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), tapEnv+"="+string(job))
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			switch {
			case tc.attach && err != nil:
				t.Fatalf("unprivileged attach failed: %v\n%s", err, out)
			case !tc.attach && (!errors.As(err, &ee) || ee.ExitCode() != 5):
				t.Fatalf("unprivileged attach: %v, want refused (exit 5)\n%s", err, out)
			}
		})
	}
}
