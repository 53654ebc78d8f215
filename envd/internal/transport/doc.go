// Package transport owns how envd accepts connections from the host: a TCP
// listener, an AF_VSOCK listener, and a virtio-serial port multiplexed with
// yamux. Every constructor returns a net.Listener; the server (h2c) serves
// the same handler on all of them. It imports nothing else from envd.
//
// # The virtio-serial channel
//
// QEMU without /dev/vhost-vsock gives the guest a virtserialport backed on
// the host by a Unix-socket chardev server (server=on,wait=off) that serves
// one host client at a time. In the guest the port is a character device:
// /dev/virtio-ports/<name> when udev runs, else /dev/vportNpM whose
// /sys/class/virtio-ports/vportNpM/name is <name> (default org.wrenn.envd).
// Its semantics, which this package relies on: a read returns 0 (EOF) while
// no host client is connected and nothing is buffered; bytes the guest
// writes while no host client is connected are dropped; a host reconnect
// is not signalled in-band. After a snapshot restore the guest resumes in
// whatever state it was, talking to a host client that knows nothing of it.
//
// So a byte-stream handshake runs before every yamux session. All markers
// are ASCII lines; the break is 12 bytes of 0xFF, a yamux header whose
// version byte (0xFF, not 0) no yamux peer accepts.
//
// Guest (envd, yamux server), in handshake mode:
//
//  1. Write "WRENN-READY\n" at once, then every 100 ms, and also right
//     after reading any input in step 2 that did not complete HELLO (a
//     host that connects sends a break or waits; either way it hears
//     READY without waiting for the next tick).
//  2. Read and discard everything (including 0xFF breaks and EOFs, after
//     which it waits before reading again: 2 ms, doubling with each EOF
//     in a row up to 30 ms) until the 12 bytes "WRENN-HELLO\n" have been
//     read, wherever they appear in the stream.
//  3. Stop writing READY (a READY already being written completes first),
//     write "WRENN-GO\n", and start a yamux server session on the port.
//     Bytes that followed HELLO are the session's first bytes. From here on
//     the guest writes only yamux.
//  4. When the session ends for any reason (EOF because the host went
//     away, a protocol error such as a break, a keepalive timeout), close it
//     and go back to 1. Streams of the old session fail; Accept keeps
//     returning streams of later sessions.
//
// Host (agent, yamux client), after connecting to the chardev socket:
//
//  1. Read and discard until "WRENN-READY\n" has been read. Whenever 300 ms
//     pass without it (measured from connecting, then from the last break),
//     write the break (12 x 0xFF) and keep waiting. A guest still inside a
//     session from before a snapshot fails that session on the break and
//     starts step 1 of its side.
//  2. Write "WRENN-HELLO\n" once.
//  3. Read and discard (late READY lines) until "WRENN-GO\n"; bytes after
//     it belong to yamux.
//  4. Start a yamux client on the connection and ping once: a reply
//     proves the guest is in the session (a stale GO from an interrupted
//     earlier handshake would not be). If the ping or, later, the session
//     fails, close the connection, reconnect and start again from 1.
//
// DialSerialHost in hostside_test.go is the host half used by these tests;
// the host agent's own implementation is internal/envdclient in the main
// module.
//
// Limitation: if a snapshot caught the guest's yamux reader in the middle
// of a data frame whose remaining bytes were lost with the old host
// connection, the break bytes are consumed as frame payload rather than as
// a header. The guest then recovers only through its yamux keepalive
// (KeepAliveInterval plus ConnectionWriteTimeout, 25 s). Quiescing traffic
// before a snapshot avoids this.
package transport
