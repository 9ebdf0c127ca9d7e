package transform

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// ParseLabels reads "name=value" flags, as --label takes them. A name must be
// a valid Prometheus label name that does not start with "__" (the server
// refuses reserved names); a value must be non-empty UTF-8, since an empty
// value means "no label" to Prometheus. Giving one name twice with different
// values is an error.
func ParseLabels(flags []string) (map[string]string, error) {
	out := make(map[string]string, len(flags))
	for _, f := range flags {
		name, value, ok := strings.Cut(f, "=")
		switch {
		case !ok:
			return nil, fmt.Errorf("parse label %q: want name=value", f)
		case !validLabelName(name):
			return nil, fmt.Errorf("parse label %q: invalid label name %q", f, name)
		case strings.HasPrefix(name, "__"):
			return nil, fmt.Errorf("parse label %q: names starting with __ are reserved", f)
		case value == "":
			return nil, fmt.Errorf("parse label %q: empty value", f)
		case !utf8.ValidString(value):
			return nil, fmt.Errorf("parse label %q: value is not valid UTF-8", f)
		}
		if prev, dup := out[name]; dup && prev != value {
			return nil, fmt.Errorf("parse label %q: %s is already set to %q", f, name, prev)
		}
		out[name] = value
	}
	return out, nil
}

// ParseRenames reads "old=new" flags, as --rename takes them. Both sides must
// be valid metric names. Renaming one family twice, or two families to the
// same name (which would leave two families of one name), is an error.
func ParseRenames(flags []string) (map[string]string, error) {
	out := make(map[string]string, len(flags))
	target := make(map[string]string, len(flags)) // new name -> old name
	for _, f := range flags {
		from, to, ok := strings.Cut(f, "=")
		switch {
		case !ok:
			return nil, fmt.Errorf("parse rename %q: want old=new", f)
		case !validMetricName(from):
			return nil, fmt.Errorf("parse rename %q: invalid metric name %q", f, from)
		case !validMetricName(to):
			return nil, fmt.Errorf("parse rename %q: invalid metric name %q", f, to)
		}
		if prev, dup := out[from]; dup && prev != to {
			return nil, fmt.Errorf("parse rename %q: %s is already renamed to %s", f, from, prev)
		}
		if other, dup := target[to]; dup && other != from {
			return nil, fmt.Errorf("parse rename %q: %s is already the new name of %s", f, to, other)
		}
		out[from] = to
		target[to] = from
	}
	return out, nil
}

// validMetricName reports whether s matches [a-zA-Z_:][a-zA-Z0-9_:]*, the
// names every Prometheus version and the server's decoder accept.
func validMetricName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isLetter(c) && c != '_' && c != ':' && (i == 0 || !isDigit(c)) {
			return false
		}
	}
	return true
}

// validLabelName reports whether s matches [a-zA-Z_][a-zA-Z0-9_]*.
func validLabelName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isLetter(c) && c != '_' && (i == 0 || !isDigit(c)) {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') }
func isDigit(c byte) bool  { return '0' <= c && c <= '9' }
