// Package config reads the authbl-milter TOML configuration.
//
// Defaults live in Default, in one place. Load decodes a file on top of
// them, rejects keys it does not know and validates every value, and
// reports all problems at once, each with its key path, so that an operator
// fixes a broken file in one pass.
package config

import (
	"net/netip"
	"os"
	"strconv"
	"time"
)

// DefaultPath is where serve and the other subcommands look for the file
// when -config is not given.
const DefaultPath = "/etc/authbl-milter/config.toml"

// Config is the whole configuration. Field tags name the TOML keys.
type Config struct {
	Milter   Milter   `toml:"milter"`
	Action   Action   `toml:"action"`
	DNS      DNS      `toml:"dns"`
	Abusix   Abusix   `toml:"abusix"`
	Lists    []List   `toml:"list"`
	Accounts Accounts `toml:"accounts"`
	Log      Log      `toml:"log"`
	Notify   Notify   `toml:"notify"`
	HTTP     HTTP     `toml:"http"`
	Exempt   Exempt   `toml:"exempt"`
}

// Milter configures the milter listener and its failure policy.
type Milter struct {
	// Listen is a Postfix-style socket: inet:HOST:PORT, inet6:[HOST]:PORT,
	// or unix:/path. Sendmail's inet:PORT@HOST is accepted too.
	Listen string `toml:"listen"`
	// OnError is "accept" or "tempfail": what a transaction gets when a
	// lookup or the account store fails.
	OnError string `toml:"on_error"`
	// Timeout bounds each lookup of a transaction from its start, and so
	// the wait for them at end of headers.
	Timeout Duration `toml:"timeout"`
	// SocketMode is the octal permission of a unix socket ("0660").
	SocketMode string `toml:"socket_mode"`
	// SocketGroup, when set, is the group a unix socket is given, so
	// that the MTA's user can reach it (Postfix: "postfix").
	SocketGroup string `toml:"socket_group"`
}

// FileMode returns SocketMode parsed; Validate has checked it.
func (m Milter) FileMode() os.FileMode {
	v, err := strconv.ParseUint(m.SocketMode, 8, 32)
	if err != nil {
		return 0o660
	}
	return os.FileMode(v) & os.ModePerm
}

// Action configures what happens to mail from a compromised account.
type Action struct {
	Mode       string `toml:"mode"`        // reject | quarantine | log
	RejectText string `toml:"reject_text"` // "5.7.1 ..." after the 550
}

// DNS configures the resolver used for list lookups.
type DNS struct {
	Servers []string `toml:"servers"` // host:port; empty means /etc/resolv.conf
	Timeout Duration `toml:"timeout"` // per query

	// Attempts is how many rounds over Servers one query may take.
	Attempts int `toml:"attempts"`
	// CacheSize is how many answers are kept in memory; 0 turns the
	// cache off.
	CacheSize int `toml:"cache_size"`
	// CacheMinTTL and CacheMaxTTL bound how long an answer is kept,
	// whatever its TTL says.
	CacheMinTTL Duration `toml:"cache_min_ttl"`
	CacheMaxTTL Duration `toml:"cache_max_ttl"`
	// HealthInterval is how often every list's self-test runs in the
	// background; 0 turns it off.
	HealthInterval Duration `toml:"health_interval"`
}

// Abusix holds the Abusix Mail Intelligence key. When a key is set, the
// authbl and authbl-rcpt lists are added with their documented codes.
type Abusix struct {
	// APIKey is the key itself. Without it and without APIKeyFile, Load
	// reads the environment variable named by EnvAbusixKey.
	APIKey string `toml:"api_key"`
	// APIKeyFile names a file holding the key. Load resolves a relative
	// path against the directory of the configuration file.
	APIKeyFile string `toml:"api_key_file"`
}

// List is one blocklist.
type List struct {
	Name       string   `toml:"name"`
	Kind       string   `toml:"kind"` // ip | recipient
	Zone       string   `toml:"zone"`
	Match      []string `toml:"match"`       // IPs or CIDRs meaning listed
	TestPoint  string   `toml:"test_point"`  // an item always listed
	TestExpect string   `toml:"test_expect"` // the code it must answer

	// File is a local file in an rbldnsd format that the list is served
	// from, instead of Zone; Format names the format.
	File   string `toml:"file"`
	Format string `toml:"format"`

	// Secret is part of Zone that must never be shown (an API key). It is
	// set by Load for lists built from [abusix], and by Validate for a
	// zone of a known key-in-the-name provider; never read from the file.
	// DisplayZone and Redacted hide it.
	Secret string `toml:"-"`
	// MatchPrefixes is Match parsed; filled by Validate (and so by Load).
	// When Match is empty it holds DefaultMatchPrefixes.
	MatchPrefixes []netip.Prefix `toml:"-"`
}

// Accounts configures the account store.
type Accounts struct {
	Backend  string   `toml:"backend"` // sqlite | redis
	Path     string   `toml:"path"`
	RedisURL string   `toml:"redis_url"`
	TTL      Duration `toml:"ttl"`
	Allow    []string `toml:"allow"`

	// RedisPrefix starts every key in Redis, so that several sites can
	// share one server.
	RedisPrefix string `toml:"redis_prefix"`
}

// Log configures zap.
type Log struct {
	Level  string `toml:"level"`  // debug | info | warn | error
	Format string `toml:"format"` // json | console
}

// Notify configures announcements of new detections.
type Notify struct {
	Command       []string `toml:"command"`
	Webhook       []string `toml:"webhook"`
	WebhookSecret string   `toml:"webhook_secret"`
	// Timeout bounds one run of the command and one webhook request.
	Timeout Duration `toml:"timeout"`
}

// HTTP configures the metrics and health listener.
type HTTP struct {
	Listen string `toml:"listen"`
}

// Duration is a time.Duration written as a Go duration string ("5s").
type Duration struct{ time.Duration }
