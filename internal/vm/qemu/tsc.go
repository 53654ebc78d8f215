package qemu

import (
	"runtime"
	"time"
)

// Under TCG the guest's TSC runs at the host's TSC rate (QEMU reads the
// host counter), but the guest kernel still calibrates it against the
// emulated PIT. On a busy host that calibration fails ("tsc: Unable to
// calibrate against PIT"), the kernel marks the TSC unstable and then
// spins forever calibrating its delay loop: the silent TCG boot hang.
// Passing tsc_early_khz=<host rate> skips the calibration (verified on
// 6.1 under a load average of 20: every boot got through, none did
// without it).

// measureTSCKHz measures the host TSC rate over window. It returns 0 where
// there is no TSC or no clean measurement could be taken.
func measureTSCKHz(window time.Duration) int64 {
	if !haveTSC {
		return 0
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t0, c0, ok0 := tscSample()
	time.Sleep(window)
	t1, c1, ok1 := tscSample()
	ns := t1.Sub(t0).Nanoseconds()
	if !ok0 || !ok1 || ns <= 0 || c1 <= c0 {
		return 0
	}
	return int64(float64(c1-c0)/float64(ns)*1e6 + 0.5)
}

// tscSample pairs a TSC reading with the clock, retrying when the thread
// was preempted between the two (the TSC readings around the clock read
// lie far apart).
func tscSample() (time.Time, uint64, bool) {
	for range 20 {
		a := rdtsc()
		t := time.Now()
		b := rdtsc()
		if b > a && b-a < 50_000 {
			return t, a + (b-a)/2, true
		}
	}
	return time.Time{}, 0, false
}
