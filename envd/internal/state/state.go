// Package state holds envd's mutable runtime configuration: the access token,
// the default environment, user and working directory set through POST /init.
// Every service reads it; only the /init handler writes it. It imports
// nothing else from envd.
package state

import (
	"crypto/subtle"
	"errors"
	"maps"
	"sync"
	"time"
)

// DefaultUser is the user processes run as when neither the request nor
// /init names one.
const DefaultUser = "root"

// ErrTokenMismatch means an /init call tried to change a token it does not know.
var ErrTokenMismatch = errors.New("access token mismatch")

// Init is what a POST /init call may change. Nil fields are left alone.
type Init struct {
	AccessToken    *string
	EnvVars        map[string]string
	DefaultUser    *string
	DefaultWorkdir *string
	Timestamp      time.Time
}

// State is safe for concurrent use.
type State struct {
	mu       sync.RWMutex
	token    string
	hasToken bool
	envVars  map[string]string
	user     string
	workdir  string
	lastInit time.Time
}

// New returns a State with no token, no extra environment and root as the
// default user.
func New() *State {
	return &State{envVars: map[string]string{}, user: DefaultUser}
}

// CheckToken reports whether a request carrying token may proceed: always
// when no token has been set, otherwise only on an exact match (compared in
// constant time).
func (s *State) CheckToken(token string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if !s.hasToken {
		return true
	}
	return subtle.ConstantTimeCompare([]byte(s.token), []byte(token)) == 1
}

// Token returns the access token in force, if any. Only the signed-URL
// check needs the raw value; everything else uses CheckToken.
func (s *State) Token() (string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.token, s.hasToken
}

// HasToken reports whether an access token is in force.
func (s *State) HasToken() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.hasToken
}

// Apply applies an /init request. presented is the X-Access-Token the caller
// sent. A token may be set freely while none is in force; once one is, the
// caller must present it (header or body) to change anything. A request
// whose timestamp is older than the last applied one changes nothing and
// reports applied=false; a zero timestamp always applies.
func (s *State) Apply(in Init, presented string) (applied bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hasToken {
		ok := subtle.ConstantTimeCompare([]byte(s.token), []byte(presented)) == 1
		if !ok && in.AccessToken != nil {
			ok = subtle.ConstantTimeCompare([]byte(s.token), []byte(*in.AccessToken)) == 1
		}
		if !ok {
			return false, ErrTokenMismatch
		}
	}
	if !in.Timestamp.IsZero() {
		if !s.lastInit.IsZero() && in.Timestamp.Before(s.lastInit) {
			return false, nil
		}
		s.lastInit = in.Timestamp
	}
	if in.AccessToken != nil {
		s.token = *in.AccessToken
		s.hasToken = *in.AccessToken != ""
	}
	if in.EnvVars != nil {
		maps.Copy(s.envVars, in.EnvVars)
	}
	if in.DefaultUser != nil && *in.DefaultUser != "" {
		s.user = *in.DefaultUser
	}
	if in.DefaultWorkdir != nil {
		s.workdir = *in.DefaultWorkdir
	}
	return true, nil
}

// EnvVars returns a copy of the default environment set by /init.
func (s *State) EnvVars() map[string]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return maps.Clone(s.envVars)
}

// DefaultUser is the user for requests that do not name one.
func (s *State) DefaultUser() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.user
}

// DefaultWorkdir is the directory relative paths and processes start in;
// empty means the user's home.
func (s *State) DefaultWorkdir() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.workdir
}
