package config

import (
	"fmt"
	"net/netip"
	"strings"
)

// Redacted replaces each secret in Redacted and WriteTOML output.
const Redacted = "REDACTED"

// Matches reports whether the answer a (an A record) means "listed": it
// lies inside MatchPrefixes, which Validate fills. A list that has neither
// Match nor MatchPrefixes uses DefaultMatch.
func (l List) Matches(a netip.Addr) bool {
	a = a.Unmap()
	prefixes := l.MatchPrefixes
	if len(prefixes) == 0 && len(l.Match) == 0 {
		prefixes = defaultMatch
	}
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// DisplayZone returns Zone with its Secret replaced by Redacted, for logs,
// errors and output. Query with Zone; show DisplayZone.
func (l List) DisplayZone() string {
	if l.Secret == "" {
		return l.Zone
	}
	labels := strings.Split(l.Zone, ".")
	found := false
	for i := range labels {
		if strings.EqualFold(labels[i], l.Secret) {
			labels[i], found = Redacted, true
		}
	}
	if found {
		return strings.Join(labels, ".")
	}
	// Not a whole label: hide every occurrence rather than show any.
	zone := strings.ToLower(l.Zone)
	return strings.ReplaceAll(zone, strings.ToLower(l.Secret), Redacted)
}

// String returns the list's name, kind and DisplayZone, so that a List
// printed with %v does not show its secret.
func (l List) String() string {
	return fmt.Sprintf("%s (%s %s)", l.Name, l.Kind, l.DisplayZone())
}
