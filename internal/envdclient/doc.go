// Package envdclient is how the host reaches envd inside a guest. It owns
// the transports (a Dialer per VMM channel: QEMU's virtio-serial port with a
// yamux session over it, Firecracker's hybrid vsock, plain TCP for envd on
// loopback) and a Client that speaks envd's HTTP routes and its process and
// filesystem Connect services over any of them, with a health check that
// retries with backoff and redials after a snapshot or restore.
//
// It imports no VM driver and nothing from the control plane: a VM driver
// hands its Instance (which has DialEnvd) to New as the Dialer.
package envdclient
