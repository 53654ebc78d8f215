package qemu

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Names of the files the driver creates in a VM's RunDir.
const (
	qmpSocket   = "qmp.sock"
	envdSocket  = "envd.sock"
	pidFile     = "qemu.pid"
	serialLog   = "serial.log"
	qemuLog     = "qemu.log"
	machineJSON = "machine.json"
)

// runFiles lists every file the driver may create in RunDir.
var runFiles = []string{qmpSocket, envdSocket, pidFile, serialLog, qemuLog, machineJSON}

// EnvdPortName is the virtserialport name envd looks for in the guest.
const EnvdPortName = "org.wrenn.envd"

// baseAppend is the kernel command line the driver always passes; the
// Spec's KernelArgs are appended.
const baseAppend = "console=ttyS0 root=/dev/vda rw panic=1"

// Placeholders in a machine's argument template; everything else in the
// template is fixed when the VM is first booted and reused verbatim on
// restore, so the device list and its order never change.
const (
	phName   = "${NAME}"
	phRootfs = "${ROOTFS}"
	phRunDir = "${RUN_DIR}"
	phNetdev = "${NETDEV}"
	phKernel = "${KERNEL}"
	phInitrd = "${INITRD}"
	// phMemObject is the -object of a machine whose RAM is a named
	// backend (machine.MemoryFile): see memObject.
	phMemObject = "${MEM_OBJECT}"
)

// ramBackendID names the memory-backend-file object of file-backed VMs.
const ramBackendID = "ram0"

// machine is what fixes a VM's virtual hardware. It is saved in
// snapshot.json and must be identical between a snapshot and its restore.
type machine struct {
	Accel      string `json:"accel"`
	CPU        string `json:"cpu"`
	MemoryMB   int    `json:"memory_mb"`
	VCPUs      int    `json:"vcpus"`
	Kernel     string `json:"kernel"`
	Initrd     string `json:"initrd,omitempty"`
	Append     string `json:"append"`
	DriveCache string `json:"drive_cache"`
	NIC        bool   `json:"nic"`
	MAC        string `json:"mac,omitempty"`
	// MemoryFile: guest RAM is a memory-backend-file (vm.Spec.MemoryFile)
	// and snapshots use x-ignore-shared (they hold device state only).
	MemoryFile bool `json:"memory_file,omitempty"`
}

// template renders the machine's full QEMU argument list with placeholders
// for the per-instance parts (name, rootfs, run dir, network backend).
func (m machine) template() []string {
	mach := "microvm,x-option-roms=off"
	if m.MemoryFile {
		mach += ",memory-backend=" + ramBackendID
	}
	args := []string{
		"-name", "guest=" + phName + ",debug-threads=off",
		"-M", mach,
		"-accel", m.Accel,
		"-cpu", m.CPU,
		"-m", fmt.Sprint(m.MemoryMB),
	}
	if m.MemoryFile {
		args = append(args, "-object", phMemObject)
	}
	args = append(args,
		"-smp", fmt.Sprint(m.VCPUs),
		"-nodefaults", "-no-user-config", "-display", "none",
		"-global", "virtio-mmio.force-legacy=false",
		"-kernel", phKernel,
	)
	if m.Initrd != "" {
		args = append(args, "-initrd", phInitrd)
	}
	args = append(args,
		"-append", m.Append,
		"-no-reboot",
		"-drive", "id=root,file="+phRootfs+",format=raw,if=none,cache="+m.DriveCache,
		"-device", "virtio-blk-device,drive=root",
	)
	if m.NIC {
		nic := "virtio-net-device,netdev=net0"
		if m.MAC != "" {
			nic += ",mac=" + m.MAC
		}
		args = append(args, "-netdev", phNetdev, "-device", nic)
	}
	args = append(args,
		"-chardev", "socket,id=envd,path="+phRunDir+"/"+envdSocket+",server=on,wait=off",
		"-device", "virtio-serial-device",
		"-device", "virtserialport,chardev=envd,name="+EnvdPortName,
		"-chardev", "file,id=ser0,path="+phRunDir+"/"+serialLog,
		"-serial", "chardev:ser0",
		"-qmp", "unix:"+phRunDir+"/"+qmpSocket+",server=on,wait=off",
		"-pidfile", phRunDir+"/"+pidFile,
	)
	return args
}

// instanceArgs fills a template's placeholders for one instance.
type instanceArgs struct {
	Name   string // the sandbox ID
	Rootfs string
	RunDir string
	Netdev string // netdev backend option string, "" when the machine has no NIC
	Kernel string
	Initrd string
	// MemObject is the RAM backend of a machine.MemoryFile machine (see
	// memObject); empty otherwise.
	MemObject string
}

// memObject is the RAM backend -object of a machine.MemoryFile VM: the
// file mapped shared (share=on: the VM that owns the file), the file
// mapped private (share=off: a restore of a snapshot that left RAM in the
// file), or, when path is empty, anonymous RAM of the same name and size
// (a restore of a snapshot whose stream holds all of RAM).
func memObject(memoryMB int, path string, share bool) string {
	if path == "" {
		return fmt.Sprintf("memory-backend-ram,id=%s,size=%dM", ramBackendID, memoryMB)
	}
	sh := "off"
	if share {
		sh = "on"
	}
	return fmt.Sprintf("memory-backend-file,id=%s,size=%dM,mem-path=%s,share=%s", ramBackendID, memoryMB, path, sh)
}

// render substitutes the placeholders. It fails when a value contains a
// comma, which QEMU's option parser would split on (MemObject is built by
// memObject from a path checked by Create or Restore).
func (ia instanceArgs) render(tmpl []string) ([]string, error) {
	for what, v := range map[string]string{"id": ia.Name, "rootfs": ia.Rootfs, "run dir": ia.RunDir} {
		if strings.ContainsAny(v, ",\n") {
			return nil, fmt.Errorf("%s %q contains a comma or newline", what, v)
		}
	}
	r := strings.NewReplacer(phName, ia.Name, phRootfs, ia.Rootfs, phRunDir, ia.RunDir,
		phNetdev, ia.Netdev, phKernel, ia.Kernel, phInitrd, ia.Initrd,
		phMemObject, ia.MemObject)
	out := make([]string, len(tmpl))
	for i, a := range tmpl {
		out[i] = r.Replace(a)
	}
	return out, nil
}

// tapNetdev is the -netdev value for a TAP backend.
func tapNetdev(tap string) string {
	return "tap,id=net0,ifname=" + tap + ",script=no,downscript=no"
}

// runPath joins RunDir and a driver file name.
func runPath(runDir, name string) string { return filepath.Join(runDir, name) }
