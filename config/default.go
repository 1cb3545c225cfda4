package config

import (
	"net/netip"
	"slices"
	"time"
)

// Values of Milter.OnError.
const (
	OnErrorAccept   = "accept"
	OnErrorTempfail = "tempfail"
)

// Values of Action.Mode.
const (
	ModeReject     = "reject"
	ModeQuarantine = "quarantine"
	ModeLog        = "log"
)

// Values of List.Kind.
const (
	KindIP        = "ip"
	KindRecipient = "recipient"
)

// Values of List.Format: rbldnsd's dataset types.
const (
	FormatIP4Set   = "ip4set"
	FormatIP4TSet  = "ip4tset"
	FormatIP4Trie  = "ip4trie"
	FormatIP6Trie  = "ip6trie"
	FormatIP6TSet  = "ip6tset"
	FormatDNSet    = "dnset"
	FormatCombined = "combined"
)

// Values of Accounts.Backend.
const (
	BackendSQLite = "sqlite"
	BackendRedis  = "redis"
)

// DefaultRejectText is the text after "550" when Action.RejectText is not
// set. It starts with the RFC 3463 enhanced status code 5.7.1.
const DefaultRejectText = "5.7.1 Your account appears to be compromised;" +
	" contact your mail administrator"

// DefaultMatch describes the answers that mean "listed" for a list without
// match: all of 127.0.0.0/8 except 127.255.255.0/24, the block where
// blocklists answer errors (127.255.255.254: query via public resolver,
// 127.255.255.255: rate limited and the like).
const DefaultMatch = "127.0.0.0/8 except 127.255.255.0/24"

// defaultMatch is DefaultMatch as prefixes: 127.0.0.0/8 halved again and
// again, keeping each half that does not hold 127.255.255.0/24.
var defaultMatch = mustPrefixes(
	"127.0.0.0/9", "127.128.0.0/10", "127.192.0.0/11", "127.224.0.0/12",
	"127.240.0.0/13", "127.248.0.0/14", "127.252.0.0/15", "127.254.0.0/16",
	"127.255.0.0/17", "127.255.128.0/18", "127.255.192.0/19", "127.255.224.0/20",
	"127.255.240.0/21", "127.255.248.0/22", "127.255.252.0/23", "127.255.254.0/24",
)

// DefaultMatchPrefixes returns DefaultMatch as a fresh slice of disjoint
// prefixes.
func DefaultMatchPrefixes() []netip.Prefix {
	return slices.Clone(defaultMatch)
}

// Default returns the configuration used for every key a file leaves out.
// It is the one place that knows the defaults.
func Default() Config {
	return Config{
		Milter: Milter{
			Listen:  "inet:127.0.0.1:8899",
			OnError: OnErrorAccept,
			Timeout: Duration{5 * time.Second},

			SocketMode: "0660",
		},
		Action: Action{
			Mode:       ModeReject,
			RejectText: DefaultRejectText,
		},
		DNS: DNS{
			Servers: []string{}, // empty: /etc/resolv.conf
			Timeout: Duration{2 * time.Second},

			Attempts:       2,
			CacheSize:      10000,
			CacheMinTTL:    Duration{5 * time.Second},
			CacheMaxTTL:    Duration{time.Hour},
			HealthInterval: Duration{5 * time.Minute},
		},
		Accounts: Accounts{
			Backend: BackendSQLite,
			Path:    "/var/lib/authbl-milter/accounts.db",
			Allow:   []string{},

			RedisPrefix: "authbl:",
		},
		Log: Log{
			Level:  "info",
			Format: "json",
		},
		Notify: Notify{
			Command: []string{},
			Webhook: []string{},
			Timeout: Duration{10 * time.Second},
		},
		HTTP: HTTP{Listen: "127.0.0.1:9899"}, // loopback; "" turns it off
		Exempt: Exempt{
			ClientNetworks: []string{},
			Recipients:     []string{},
		},
	}
}

func mustPrefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i := range s {
		out[i] = netip.MustParsePrefix(s[i])
	}
	return out
}
