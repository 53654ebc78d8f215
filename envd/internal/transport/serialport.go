package transport

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// portWait bounds how long ListenSerial waits for the port device: the
// virtio console driver adds ports asynchronously after it loads.
const portWait = 5 * time.Second

// ErrNoSerialPort means no virtio-serial port with the given name exists.
var ErrNoSerialPort = errors.New("no such virtio-serial port")

// findPort resolves a port name to its device path: an absolute path is
// returned as is; otherwise <dev>/virtio-ports/<name> (made by udev), or
// the <dev>/vportNpM whose <sys>/vportNpM/name holds the name.
func findPort(dev, sys, nameOrPath string) (string, error) {
	if strings.HasPrefix(nameOrPath, "/") {
		if _, err := os.Stat(nameOrPath); err != nil {
			return "", fmt.Errorf("serial port %s: %w", nameOrPath, err)
		}
		return nameOrPath, nil
	}
	if nameOrPath == "" || strings.Contains(nameOrPath, "/") {
		return "", fmt.Errorf("serial port name %q is invalid", nameOrPath)
	}
	link := filepath.Join(dev, "virtio-ports", nameOrPath)
	if _, err := os.Stat(link); err == nil {
		return link, nil
	}
	ents, err := os.ReadDir(sys)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("list %s: %w", sys, err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(sys, e.Name(), "name"))
		if err != nil || strings.TrimSpace(string(b)) != nameOrPath {
			continue
		}
		p := filepath.Join(dev, e.Name())
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("serial port %s: %w", nameOrPath, err)
		}
		return p, nil
	}
	return "", fmt.Errorf("%w: %s", ErrNoSerialPort, nameOrPath)
}

// waitPort retries findPort until it succeeds, portWait passes or ctx ends.
func waitPort(ctx context.Context, dev, sys, nameOrPath string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, portWait)
	defer cancel()
	for {
		p, err := findPort(dev, sys, nameOrPath)
		if err == nil {
			return p, nil
		}
		select {
		case <-ctx.Done():
			return "", err
		case <-time.After(50 * time.Millisecond):
		}
	}
}
