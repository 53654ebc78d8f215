package initsys

import "strings"

// Param is one kernel command-line parameter. A bare word (`ro`) has
// HasValue false.
type Param struct {
	Key      string
	Value    string
	HasValue bool
}

// Cmdline is the parsed kernel command line, in order.
type Cmdline []Param

// ParseCmdline splits a kernel command line the way the kernel does:
// parameters are separated by whitespace, double quotes group a value with
// spaces in it and are removed (`a="b c"` and `"a=b c"` are both a=`b c`),
// and the first `=` separates key from value. Parameters after `--` (those
// the kernel hands to init) are included.
func ParseCmdline(s string) Cmdline {
	var out Cmdline
	var tok strings.Builder
	inQuote, inTok := false, false
	flush := func() {
		if !inTok {
			return
		}
		t := tok.String()
		tok.Reset()
		inTok = false
		if t == "--" {
			return
		}
		k, v, ok := strings.Cut(t, "=")
		out = append(out, Param{Key: k, Value: v, HasValue: ok})
	}
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			inTok = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n' || r == '\r'):
			flush()
		default:
			tok.WriteRune(r)
			inTok = true
		}
	}
	flush()
	return out
}

// Lookup returns the value of the last parameter named key (later ones win,
// as with the kernel's own handling of repeated parameters).
func (c Cmdline) Lookup(key string) (string, bool) {
	for i := len(c) - 1; i >= 0; i-- {
		if c[i].Key == key {
			return c[i].Value, true
		}
	}
	return "", false
}
