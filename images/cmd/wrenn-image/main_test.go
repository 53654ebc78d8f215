package main

import (
	"context"
	"strings"
	"testing"
)

func TestRunRejectsBadInvocations(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "usage"},
		{[]string{"nosuch"}, "unknown command"},
		{[]string{"build", "-envd", ""}, "-envd"},
		{[]string{"initramfs"}, "-out is required"},
		{[]string{"rootfs", "-dir", "x"}, "required"},
		{[]string{"stage-minimal"}, "-dir is required"},
		{[]string{"build", "-no-such-flag"}, "not defined"},
	}
	for _, tt := range tests {
		t.Setenv("WRENN_ENVD", "")
		err := run(context.Background(), tt.args)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

func TestSplitList(t *testing.T) {
	if got := strings.Join(splitList(" a, ,b,c "), "|"); got != "a|b|c" {
		t.Fatalf("splitList: %q", got)
	}
}

func TestShellJoin(t *testing.T) {
	got := shellJoin([]string{"-append", "console=ttyS0 quiet", "it's"})
	if want := `-append 'console=ttyS0 quiet' 'it'\''s'`; got != want {
		t.Fatalf("shellJoin = %s, want %s", got, want)
	}
}
