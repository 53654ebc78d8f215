package fakefc

import (
	"github.com/wrenn-dev/wrenn-sandbox/internal/vm/firecracker/fcapi"
)

func (v *VMM) action(body []byte) *apiError {
	var a fcapi.InstanceActionInfo
	if err := decode(body, actionSchema, &a); err != nil {
		return deserializeError(err)
	}
	if err := oneOf(a.ActionType, fcapi.ActionInstanceStart, fcapi.ActionSendCtrlAltDel, fcapi.ActionFlushMetrics); err != nil {
		return deserializeError(err)
	}
	switch a.ActionType {
	case fcapi.ActionInstanceStart:
		return v.instanceStart()
	case fcapi.ActionSendCtrlAltDel:
		if e := v.postBoot(); e != nil {
			return e
		}
		v.ctrlAltDel()
		return nil
	default:
		return v.flushMetrics()
	}
}

// instanceStart "boots" the guest: it starts envd. Like Firecracker it
// returns once the vCPUs run, not when the guest is up; a vsock CONNECT
// before envd listens is closed without OK, as a guest without a listener
// would answer.
func (v *VMM) instanceStart() *apiError {
	if e := v.preBoot(); e != nil {
		return e
	}
	if v.bootSource == nil {
		return errNoKernel
	}
	// Firecracker has these files open since their PUT; the fake checks
	// again so a test that removes them between PUT and start sees a
	// failure instead of a guest without a disk.
	if e := checkFile("The kernel file", v.bootSource.KernelImagePath); e != nil {
		return badRequest("Cannot start microvm: %s", e.msg)
	}
	for _, d := range v.drives {
		if d.Socket == "" {
			if e := checkFile("The block device file", d.PathOnHost); e != nil {
				return badRequest("Cannot start microvm: %s", e.msg)
			}
		}
	}
	if err := v.bootGuest(); err != nil {
		return badRequest("Cannot start microvm: %v", err)
	}
	v.state = stateRunning
	v.logf("Successfully started microvm that was configured from one single json")
	return nil
}

// bootGuest starts envd, if one is configured.
func (v *VMM) bootGuest() error {
	if v.cfg.EnvdPath == "" {
		v.log.Warn("no envd configured: the fake guest will not answer on vsock")
		return nil
	}
	g, err := startGuest(v.log, v.cfg.EnvdPath, v.cfg.EnvdArgs, v.guestExited)
	if err != nil {
		return err
	}
	v.guest = g
	return nil
}

// guestExited runs when envd ends on its own: for a VM that is the guest
// powering off (or PID 1 dying, which panics and reboots it with panic=1
// reboot=k), and Firecracker exits.
func (v *VMM) guestExited(g *guest) {
	v.mu.Lock()
	mine := v.guest == g
	if mine {
		v.guest = nil
	}
	v.mu.Unlock()
	if mine {
		v.Exit(0, nil)
	}
}

// ctrlAltDel asks the guest to shut down: envd gets SIGTERM (which it
// handles like an init getting Ctrl-Alt-Del). On a paused VM the key
// press waits for the resume.
func (v *VMM) ctrlAltDel() {
	if v.state == statePaused {
		v.pendingCAD = true
		return
	}
	if v.guest != nil {
		v.guest.terminate()
	}
}

func (v *VMM) patchVM(body []byte) *apiError {
	var s fcapi.VM
	if err := decode(body, vmStateSchema, &s); err != nil {
		return deserializeError(err)
	}
	if err := oneOf(s.State, fcapi.VMPaused, fcapi.VMResumed); err != nil {
		return deserializeError(err)
	}
	if e := v.postBoot(); e != nil {
		return e
	}
	switch {
	case s.State == fcapi.VMPaused && v.state == stateRunning:
		if v.guest != nil {
			if err := v.guest.stop(); err != nil {
				return badRequest("Failed to pause the microVM: %v", err)
			}
		}
		v.state = statePaused
	case s.State == fcapi.VMResumed && v.state == statePaused:
		if v.guest != nil {
			if err := v.guest.cont(); err != nil {
				return badRequest("Failed to resume the microVM: %v", err)
			}
		}
		v.state = stateRunning
		if v.pendingCAD {
			v.pendingCAD = false
			v.ctrlAltDel()
		}
	}
	return nil // repeated calls are no-ops
}
