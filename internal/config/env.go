package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Getenv looks a variable up; os.Getenv in production, a map in tests.
type Getenv func(string) string

// MapEnv adapts a map to Getenv.
func MapEnv(m map[string]string) Getenv { return func(k string) string { return m[k] } }

// envReader reads typed values and remembers the first error.
type envReader struct {
	get Getenv
	err error
}

func (r *envReader) fail(key, val, want string) {
	if r.err == nil {
		r.err = fmt.Errorf("%s=%q: %s", key, val, want)
	}
}

func (r *envReader) str(key, def string) string {
	if v := strings.TrimSpace(r.get(key)); v != "" {
		return v
	}
	return def
}

func (r *envReader) int(key string, def int64) int64 {
	v := strings.TrimSpace(r.get(key))
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		r.fail(key, v, "want a non-negative integer")
		return def
	}
	return n
}

func (r *envReader) float(key string, def float64) float64 {
	v := strings.TrimSpace(r.get(key))
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		r.fail(key, v, "want a positive number")
		return def
	}
	return f
}

func (r *envReader) bool(key string, def bool) bool {
	v := strings.TrimSpace(r.get(key))
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		r.fail(key, v, "want true or false")
		return def
	}
	return b
}

func (r *envReader) duration(key string, def time.Duration) time.Duration {
	v := strings.TrimSpace(r.get(key))
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		r.fail(key, v, "want a duration such as 10s")
		return def
	}
	return d
}

func (r *envReader) prefix(key, def string) netip.Prefix {
	v := r.str(key, def)
	p, err := netip.ParsePrefix(v)
	if err != nil || !p.Addr().Is4() {
		r.fail(key, v, "want an IPv4 CIDR such as 10.0.0.0/16")
		return netip.Prefix{}
	}
	return p.Masked()
}

func (r *envReader) oneOf(key, def string, allowed ...string) string {
	v := strings.ToLower(r.str(key, def))
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	r.fail(key, v, "want one of "+strings.Join(allowed, ", "))
	return def
}

func (r *envReader) list(key string) []string {
	var out []string
	for _, f := range strings.Split(r.get(key), ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
