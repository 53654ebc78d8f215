package transport

import (
	"fmt"
	"net"

	"github.com/mdlayher/vsock"
)

// ListenTCP listens on a TCP address such as 127.0.0.1:49983 or :49983.
func ListenTCP(addr string) (net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	return l, nil
}

// ListenVsock listens on an AF_VSOCK port for any context ID. On a machine
// without a usable AF_VSOCK (no vsock transport, no driver) it returns an
// error; envd logs it and keeps its other listeners.
func ListenVsock(port uint32) (net.Listener, error) {
	l, err := vsock.Listen(port, nil)
	if err != nil {
		return nil, fmt.Errorf("listen vsock port %d: %w", port, err)
	}
	return l, nil
}
