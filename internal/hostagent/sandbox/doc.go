// Package sandbox is the host agent's sandbox manager: it creates, pauses,
// resumes, snapshots, hibernates, restores and destroys sandboxes, runs
// commands, terminals and file transfers in them, and after an agent
// restart reattaches to every VM still running and releases whatever a
// crash left half-made.
//
// Every host resource comes from a small interface declared in deps.go
// (network, cgroups, images, template snapshots, snapshot store) with the
// real implementation wired in by internal/hostagent; the VM comes from a
// vm.Driver. A create writes the sandbox's record (internal/agentstate)
// before it acquires anything and updates it after every step, and pushes
// an undo after each acquired resource; a failure runs the undos once, in
// reverse, under context.WithoutCancel. Operations on one sandbox are
// serialised by its own mutex; different sandboxes never wait for each
// other. Errors wrap internal/errdefs sentinels; the gRPC server maps them.
//
// It imports no gRPC and nothing from the control plane.
package sandbox
