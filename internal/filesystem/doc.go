// Package filesystem owns the host-side files a sandbox boots from: the
// image registry (kernel, initramfs and one rootfs per template and
// version, as written by the images builder under images/out or
// /var/lib/wrenn/images) and per-sandbox copy-on-write clones of those
// rootfs images (a FICLONE reflink where the filesystem shares extents,
// a sparse copy otherwise).
//
// It starts no VM and imports neither the VM drivers nor the control
// plane; the host agent, the VM drivers and the template snapshot manager
// import it.
package filesystem
