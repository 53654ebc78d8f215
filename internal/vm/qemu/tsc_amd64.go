package qemu

// rdtsc reads the host's time stamp counter.
//
//go:noescape
func rdtsc() uint64

const haveTSC = true
