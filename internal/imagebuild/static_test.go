package imagebuild

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestCheckStatic(t *testing.T) {
	notELF := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		file string
		err  error // nil: must pass; errAny: any error
	}{
		{"busybox-static", DefaultBusybox, nil},
		{"dynamic binary", "/bin/ls", ErrNotStatic},
		{"not an ELF", notELF, errAny},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := os.Stat(tt.file); err != nil {
				t.Skipf("%s: %v", tt.file, err)
			}
			err := CheckStatic(tt.file)
			switch {
			case tt.err == nil && err != nil:
				t.Fatal(err)
			case tt.err == errAny && err == nil, tt.err != nil && tt.err != errAny && !errors.Is(err, tt.err):
				t.Fatalf("error %v, want %v", err, tt.err)
			}
		})
	}
}
