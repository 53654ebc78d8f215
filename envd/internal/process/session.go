package process

import (
	"bytes"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// killSession sends sig to every process whose session id is sid. Used for
// PTY processes: the shell is the session leader and its jobs live in other
// process groups of the same session.
func killSession(sid int, sig unix.Signal) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 1 {
			continue
		}
		if s, ok := sessionOf(pid); ok && s == sid {
			_ = unix.Kill(pid, sig)
		}
	}
}

// sessionOf reads the session id from /proc/<pid>/stat. The command name
// may contain spaces and parentheses, so fields are counted after the last
// ')': state ppid pgrp session.
func sessionOf(pid int) (int, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := bytes.Fields(b[i+1:])
	if len(f) < 4 {
		return 0, false
	}
	sid, err := strconv.Atoi(string(f[3]))
	return sid, err == nil
}

func itoa(n int) string { return strconv.Itoa(n) }
