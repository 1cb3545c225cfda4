package lookup

import (
	"net/netip"
	"strings"
)

// Result is what one list said about one item.
type Result int

// The four results. The zero value is Error, so that an Answer that was
// never filled in counts as a failure, not as clean.
const (
	// Error: no usable answer (timeout, SERVFAIL, REFUSED, malformed).
	Error Result = iota
	// Clean: NXDOMAIN, or no A record.
	Clean
	// Listed: at least one A record inside the list's match set.
	Listed
	// Unexpected: A records, none inside the match set. Not a listing.
	Unexpected
)

// String returns the name used in logs and by the check command.
func (r Result) String() string {
	switch r {
	case Clean:
		return "clean"
	case Listed:
		return "listed"
	case Unexpected:
		return "unexpected"
	default:
		return "error"
	}
}

// Answer is the classified answer of one list for one item.
type Answer struct {
	List   string       // the list's name
	Item   string       // the IP or normalised recipient asked about
	Result Result       // the classification
	Codes  []netip.Addr // the A records of the answer, in answer order
	Err    error        // why, for Result Error
}

// CodesString returns the answer codes joined by commas, or "-".
func (a Answer) CodesString() string {
	if len(a.Codes) == 0 {
		return "-"
	}
	s := make([]string, len(a.Codes))
	for i, c := range a.Codes {
		s[i] = c.String()
	}
	return strings.Join(s, ",")
}
