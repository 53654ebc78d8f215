// Package permissions resolves which OS user a request acts as and where its
// paths point: Basic-auth user selection, uid/gid/groups lookup, home and
// working directory, and creation of parent directories owned by that user.
// It imports only envd/internal/state.
package permissions

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os/user"
	"strconv"
	"strings"

	"github.com/wrenn-dev/envd/internal/state"
)

// ErrUnknownUser is returned for a user name the guest does not have.
var ErrUnknownUser = errors.New("unknown user")

// User is an OS account a request runs as.
type User struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32
	Home   string
}

// Lookup reads the account from the guest's passwd and group databases.
func Lookup(name string) (*User, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: empty user name", ErrUnknownUser)
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownUser, name)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: bad uid %q", name, u.Uid)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: bad gid %q", name, u.Gid)
	}
	out := &User{Name: u.Username, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir}
	if out.Home == "" {
		out.Home = "/"
	}
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				out.Groups = append(out.Groups, uint32(n))
			}
		}
	}
	return out, nil
}

// UserNameFromRequest returns the user named by an "Authorization: Basic
// base64(user:)" header, or the default user when there is no such header.
func UserNameFromRequest(h http.Header, st *state.State) (string, error) {
	auth := h.Get("Authorization")
	if auth == "" {
		return st.DefaultUser(), nil
	}
	scheme, payload, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return "", fmt.Errorf("unsupported authorization scheme")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(payload))
	if err != nil {
		return "", fmt.Errorf("malformed basic authorization: %w", err)
	}
	name, _, _ := strings.Cut(string(raw), ":")
	if name == "" {
		return st.DefaultUser(), nil
	}
	return name, nil
}

type userKey struct{}

type resolved struct {
	u   *User
	err error
}

// WithUser stores the outcome of resolving the request's user in ctx: the
// user, or the error that explains why there is none (bad header, unknown
// name). Handlers turn that error into their own "unauthenticated" reply.
func WithUser(ctx context.Context, u *User, err error) context.Context {
	return context.WithValue(ctx, userKey{}, resolved{u: u, err: err})
}

// ErrNoUser is returned by FromContext when no user was resolved for ctx.
var ErrNoUser = errors.New("no user resolved for request")

// FromContext returns the user stored by WithUser.
func FromContext(ctx context.Context) (*User, error) {
	r, ok := ctx.Value(userKey{}).(resolved)
	if !ok {
		return nil, ErrNoUser
	}
	return r.u, r.err
}

// Resolve looks up the user a request acts as: the Basic-auth user, the
// query user override when not empty, else the default user.
func Resolve(h http.Header, override string, st *state.State) (*User, error) {
	name := override
	if name == "" {
		var err error
		if name, err = UserNameFromRequest(h, st); err != nil {
			return nil, err
		}
	}
	return Lookup(name)
}
