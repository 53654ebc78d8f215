package qemu

import (
	"testing"
	"time"
)

func TestMeasureTSC(t *testing.T) {
	if !haveTSC {
		t.Skip("no TSC on this architecture")
	}
	a, b := measureTSCKHz(30*time.Millisecond), measureTSCKHz(30*time.Millisecond)
	if a < 100_000 || a > 10_000_000 {
		t.Fatalf("tsc rate %d kHz is implausible", a)
	}
	if d := a - b; d > a/100 || d < -a/100 {
		t.Errorf("two measurements differ by more than 1%%: %d vs %d kHz", a, b)
	}
	t.Logf("host tsc %d kHz", a)
}
