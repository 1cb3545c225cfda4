package config

import (
	"fmt"
	"strings"
)

// KeyError is one problem in a configuration and the key it concerns.
type KeyError struct {
	// Key is the dotted key path, list indices counted from 0 in file
	// order: "milter.listen", "list[1].kind", "list[0].match[2]". It is
	// empty for a problem with the file as a whole, such as bad syntax.
	Key string
	// Line is the 1-based line of the problem, or 0 when not known.
	Line int
	// Msg says what is wrong. It never holds a secret.
	Msg string
}

// Error returns "KEY: MSG", or "line N: MSG" for a problem without a key.
func (e KeyError) Error() string {
	var b strings.Builder
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", e.Line)
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one configuration, in the order found:
// decoding problems in file order, then validation in schema order. Parse,
// Load and Validate return it as *Errors.
type Errors struct {
	Source string // the file name; empty when not from a file
	List   []KeyError
}

// Error lists one problem per line, each prefixed with the source, like a
// compiler: "config.toml: list[1].kind: must be ...".
func (e *Errors) Error() string {
	lines := make([]string, len(e.List))
	for i, ke := range e.List {
		prefix := ""
		if e.Source != "" {
			prefix = e.Source + ": "
			if ke.Line > 0 {
				prefix = fmt.Sprintf("%s:%d: ", e.Source, ke.Line)
				ke.Line = 0 // already in the prefix
			}
		}
		lines[i] = prefix + ke.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the problems, so that errors.As finds a KeyError.
func (e *Errors) Unwrap() []error {
	errs := make([]error, len(e.List))
	for i := range e.List {
		errs[i] = e.List[i]
	}
	return errs
}

// problems collects KeyErrors, keeping only the first for each key so that
// a value that failed to decode is not also reported as invalid.
type problems struct {
	list []KeyError
	seen map[string]bool
}

func (p *problems) add(key, format string, args ...any) {
	if key != "" && p.seen[key] {
		return
	}
	if p.seen == nil {
		p.seen = make(map[string]bool)
	}
	p.seen[key] = true
	p.list = append(p.list, KeyError{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// has reports whether a problem was found at key or below it.
func (p *problems) has(key string) bool {
	for _, ke := range p.list {
		if ke.Key == key || strings.HasPrefix(ke.Key, key+".") ||
			strings.HasPrefix(ke.Key, key+"[") {
			return true
		}
	}
	return false
}

// err returns nil or the problems as *Errors.
func (p *problems) err(source string) error {
	if len(p.list) == 0 {
		return nil
	}
	return &Errors{Source: source, List: p.list}
}
