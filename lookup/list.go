package lookup

import (
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/authbl-milter/authbl-milter/config"
	"github.com/authbl-milter/authbl-milter/lookup/zonefile"
)

// Kind says what a list is keyed by.
type Kind int

// The kinds of list.
const (
	KindIP        Kind = iota // client addresses, the authbl kind
	KindRecipient             // recipient addresses, the authbl-rcpt kind
)

// String returns the kind as the config spells it.
func (k Kind) String() string {
	if k == KindRecipient {
		return "recipient"
	}
	return "ip"
}

var (
	loopback8  = netip.MustParsePrefix("127.0.0.0/8")
	errorCodes = netip.MustParsePrefix("127.255.255.0/24")
)

// List is one blocklist zone and the answers that mean "listed".
type List struct {
	Name string
	Kind Kind
	Zone string // without the trailing dot

	// Match holds the answers that mean listed. Empty means the default:
	// any address in 127.0.0.0/8. Either way 127.255.255.0/24, where
	// lists put their error codes, never matches.
	Match []netip.Prefix

	// TestPoint is an item the list always lists, answering TestExpect.
	// Both are optional.
	TestPoint  string
	TestExpect netip.Addr

	// File, when set, is the local file the list is served from (see
	// FileSource); Zone is then FileZone(Name).
	File   string
	Format zonefile.Format

	secret string
	source Resolver // nil: the Checker's resolver
	health atomic.Pointer[Health]
}

// NewLists builds lists from their validated configuration. A list
// served from a local file reads it now: an unreadable or broken file is
// an error.
func NewLists(cfg []config.List) ([]*List, error) {
	lists := make([]*List, 0, len(cfg))
	for _, c := range cfg {
		l := &List{
			Name:      c.Name,
			Zone:      strings.TrimSuffix(c.Zone, "."),
			Match:     c.MatchPrefixes,
			TestPoint: c.TestPoint,
			secret:    c.Secret,
		}
		switch c.Kind {
		case "ip":
			l.Kind = KindIP
		case "recipient":
			l.Kind = KindRecipient
		default:
			return nil, fmt.Errorf("list %s: unknown kind %q", c.Name, c.Kind)
		}
		if c.TestExpect != "" {
			ip, err := netip.ParseAddr(c.TestExpect)
			if err != nil {
				return nil, fmt.Errorf("list %s: test_expect: %w", c.Name, err)
			}
			l.TestExpect = ip
		}
		if c.File != "" {
			l.File, l.Format, l.Zone = c.File, zonefile.Format(c.Format), FileZone(c.Name)
			src, err := NewFileSource(l.File, l.Format, l.Zone)
			if err != nil {
				return nil, fmt.Errorf("list %s: %w", c.Name, err)
			}
			l.source = src
		}
		lists = append(lists, l)
	}
	return lists, nil
}

// SetSource makes the list answer from r instead of the Checker's
// resolver, as a list served from a file does.
func (l *List) SetSource(r Resolver) { l.source = r }

// SetSecret marks s, a part of the zone, as never to be shown.
func (l *List) SetSecret(s string) { l.secret = s }

// Matches reports whether answer code a means "listed".
func (l *List) Matches(a netip.Addr) bool {
	a = a.Unmap()
	if errorCodes.Contains(a) {
		return false
	}
	if len(l.Match) == 0 {
		return loopback8.Contains(a)
	}
	for _, p := range l.Match {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Redact replaces the list's secret in s, so that query names can be
// logged.
func (l *List) Redact(s string) string {
	if l.secret == "" {
		return s
	}
	return strings.ReplaceAll(s, l.secret, "REDACTED")
}

// QueryName returns the name to ask for item, an IP for an IP list or a
// normalised address for a recipient list.
func (l *List) QueryName(item string) (string, error) {
	if l.Kind == KindRecipient {
		return RecipientQueryName(item, l.Zone), nil
	}
	ip, err := ParseClientAddr(item)
	if err != nil {
		return "", err
	}
	return IPQueryName(ip, l.Zone), nil
}

// Classify turns a reply into a result for this list. err is a transport
// failure (timeout, no server, malformed reply).
func (l *List) Classify(r Reply, err error) (Result, error) {
	if err != nil {
		return Error, err
	}
	switch r.Rcode {
	case RcodeSuccess:
	case RcodeNameError:
		return Clean, nil
	default:
		return Error, fmt.Errorf("server answered %s", rcodeName(r.Rcode))
	}
	if len(r.A) == 0 {
		return Clean, nil
	}
	for _, a := range r.A {
		if l.Matches(a) {
			return Listed, nil
		}
	}
	return Unexpected, nil
}
