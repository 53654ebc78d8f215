// Package models holds the types every tier shares: the sandbox and its
// status state machine, the host and its capacity. The control plane and
// the host agent both import it; it imports only internal/errdefs.
package models
