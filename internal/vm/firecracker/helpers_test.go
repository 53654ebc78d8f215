package firecracker

import (
	"os"
	"strconv"
	"strings"
)

// procsMentioning lists live processes whose command line contains s (the
// VMM gets its RunDir in --api-sock).
func procsMentioning(s string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err == nil && strings.Contains(string(b), s) && alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// processesOf lists live processes running the binary at path.
func processesOf(path string) map[int]bool {
	out := map[int]bool{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink("/proc/" + e.Name() + "/exe"); err == nil && exe == path && alive(pid) {
			out[pid] = true
		}
	}
	return out
}
