package imagebuild

import (
	"debug/elf"
	"errors"
	"fmt"
)

// ErrNotStatic is returned for an envd binary that needs a dynamic loader:
// the minimal rootfs has no libc, so envd must be built with CGO_ENABLED=0.
var ErrNotStatic = errors.New("binary is not statically linked (build envd with CGO_ENABLED=0)")

// CheckStatic verifies that file is an x86-64 ELF executable with no
// program interpreter and no shared-library dependencies.
func CheckStatic(file string) error {
	f, err := elf.Open(file)
	if err != nil {
		return fmt.Errorf("check %s: %w", file, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("check %s: machine %v, want x86-64", file, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("check %s: %w", file, ErrNotStatic)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return fmt.Errorf("check %s: %w", file, err)
	}
	if len(libs) > 0 {
		return fmt.Errorf("check %s: needs %v: %w", file, libs, ErrNotStatic)
	}
	return nil
}
