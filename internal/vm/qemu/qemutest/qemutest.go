// Package qemutest holds test helpers for packages that boot VMs with the
// QEMU driver: a driver whose accelerator is resolved once per test binary,
// and a logger that writes to the test log. Only tests import it.
package qemutest

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/wrenn-dev/wrenn-sandbox/internal/testlog"
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/qemu"
)

// Logger routes slog output to t.Log; benchmarks and runs with
// WRENN_TEST_QUIET set discard it.
func Logger(t testing.TB) *slog.Logger {
	if _, bench := t.(*testing.B); bench || os.Getenv("WRENN_TEST_QUIET") != "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(testlog.Writer(t), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

var accel struct {
	once sync.Once
	name string
	err  error
}

// Driver returns a QEMU driver with up to 3 boot attempts. The accelerator
// (AGENT_QEMU_ACCEL, else a KVM probe boot of kernel) is resolved once per
// test binary.
func Driver(t testing.TB, kernel string) *qemu.Driver {
	t.Helper()
	accel.once.Do(func() {
		d, err := qemu.New(qemu.Config{Accel: os.Getenv("AGENT_QEMU_ACCEL")})
		if err != nil {
			accel.err = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		accel.name, accel.err = d.Accel(ctx, kernel)
	})
	if accel.err != nil {
		t.Fatal(accel.err)
	}
	d, err := qemu.New(qemu.Config{Accel: accel.name, BootAttempts: 3, Log: Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Accel is the accelerator Driver resolved ("" before the first Driver call).
func Accel() string { return accel.name }
