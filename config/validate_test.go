package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// valid returns a complete, valid configuration to break in one place.
func valid() Config {
	c := Default()
	c.Lists = []List{{
		Name:       "local",
		Kind:       KindIP,
		Zone:       "authbl.example.test",
		Match:      []string{"127.0.0.4"},
		TestPoint:  "127.0.0.2",
		TestExpect: "127.0.0.4",
	}}
	return c
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *Config)
		key  string // the one key with a problem
		msg  string // part of its message
	}{
		{"listen type", func(c *Config) { c.Milter.Listen = "tcp:127.0.0.1:8899" },
			"milter.listen", `unknown socket type "tcp"`},
		{"listen port", func(c *Config) { c.Milter.Listen = "inet:127.0.0.1:smtp" },
			"milter.listen", `port "smtp" is not a number`},
		{"listen relative", func(c *Config) { c.Milter.Listen = "unix:run/milter.sock" },
			"milter.listen", "must be absolute"},
		{"on_error", func(c *Config) { c.Milter.OnError = "reject" },
			"milter.on_error", `must be "accept" or "tempfail", got "reject"`},
		{"milter timeout zero", func(c *Config) { c.Milter.Timeout.Duration = 0 },
			"milter.timeout", "must be more than 0"},
		{"milter timeout negative", func(c *Config) { c.Milter.Timeout.Duration = -time.Second },
			"milter.timeout", "got -1s"},
		{"mode", func(c *Config) { c.Action.Mode = "discard" },
			"action.mode", `got "discard"`},
		{"reject_text with percent", func(c *Config) { c.Action.RejectText = "5.7.1 100% sure" },
			"action.reject_text", "must not contain %"},
		{"reject_text class 4", func(c *Config) { c.Action.RejectText = "4.7.1 try later" },
			"action.reject_text", "enhanced status code 5.X.Y"},
		{"reject_text no code", func(c *Config) { c.Action.RejectText = "You are blocked" },
			"action.reject_text", "enhanced status code"},
		{"reject_text short code", func(c *Config) { c.Action.RejectText = "5.7 blocked" },
			"action.reject_text", "enhanced status code"},
		{"reject_text CRLF", func(c *Config) { c.Action.RejectText = "5.7.1 a\r\n250 ok" },
			"action.reject_text", "one line"},
		{"reject_text LF", func(c *Config) { c.Action.RejectText = "5.7.1 a\nb" },
			"action.reject_text", "one line"},
		{"reject_text long", func(c *Config) {
			c.Action.RejectText = "5.7.1 " + strings.Repeat("x", 501) // 507 characters
		}, "action.reject_text", "is 507 characters long; at most 506"},
		{"dns server", func(c *Config) { c.DNS.Servers = []string{"10.0.0.1", "ns1.example"} },
			"dns.servers[1]", `got "ns1.example"`},
		{"dns server port 0", func(c *Config) { c.DNS.Servers = []string{"10.0.0.1:0"} },
			"dns.servers[0]", "want an IP address"},
		{"dns timeout", func(c *Config) { c.DNS.Timeout.Duration = 0 },
			"dns.timeout", "must be more than 0"},
		{"list name empty", func(c *Config) { c.Lists[0].Name = "" },
			"list[0].name", "must be set"},
		{"list name spaces", func(c *Config) { c.Lists[0].Name = "my list" },
			"list[0].name", `got "my list"`},
		{"list name duplicate", func(c *Config) {
			c.Lists = append(c.Lists, List{Name: "local", Kind: KindRecipient, Zone: "r.test"})
		}, "list[1].name", `"local" is already the name of list[0]`},
		{"list kind", func(c *Config) { c.Lists[0].Kind = "ipv4" },
			"list[0].kind", `must be "ip" or "recipient", got "ipv4"`},
		{"list zone empty", func(c *Config) { c.Lists[0].Zone = "" },
			"list[0].zone", "must be set"},
		{"list zone space", func(c *Config) { c.Lists[0].Zone = "authbl example.test" },
			"list[0].zone", `must be a DNS name, got "authbl example.test"`},
		{"list zone empty label", func(c *Config) { c.Lists[0].Zone = "authbl..test" },
			"list[0].zone", "must be a DNS name"},
		{"list zone long label", func(c *Config) {
			c.Lists[0].Zone = strings.Repeat("a", 64) + ".test"
		}, "list[0].zone", "must be a DNS name"},
		{"match garbage", func(c *Config) { c.Lists[0].Match = []string{"127.0.0.4", "x"} },
			"list[0].match[1]", `must be an IPv4 address or CIDR, got "x"`},
		{"match IPv6", func(c *Config) { c.Lists[0].Match = []string{"::1"} },
			"list[0].match[0]", "must be IPv4"},
		{"test_point not an IP", func(c *Config) { c.Lists[0].TestPoint = "host.test" },
			"list[0].test_point", `must be an IP address for a list of kind ip`},
		{"test_point not an address", func(c *Config) {
			c.Lists[0].Kind, c.Lists[0].TestPoint = KindRecipient, "example.test"
		}, "list[0].test_point", "must be a mail address"},
		{"test_expect alone", func(c *Config) { c.Lists[0].TestPoint = "" },
			"list[0].test_expect", "needs test_point"},
		{"test_expect not an IP", func(c *Config) { c.Lists[0].TestExpect = "listed" },
			"list[0].test_expect", `must be an IPv4 address (an A record), got "listed"`},
		{"test_expect IPv6", func(c *Config) { c.Lists[0].TestExpect = "::1" },
			"list[0].test_expect", "must be an IPv4 address"},
		{"test_expect outside match", func(c *Config) { c.Lists[0].TestExpect = "127.0.0.2" },
			"list[0].test_expect", "127.0.0.2 is outside match"},
		{"test_expect error code", func(c *Config) {
			c.Lists[0].Match, c.Lists[0].TestExpect = nil, "127.255.255.254"
		}, "list[0].test_expect", "outside match"},
		{"no lists", func(c *Config) { c.Lists = nil },
			"list", "no lists configured"},
		{"backend", func(c *Config) { c.Accounts.Backend = "mysql" },
			"accounts.backend", `must be "sqlite" or "redis", got "mysql"`},
		{"sqlite path", func(c *Config) { c.Accounts.Path = "" },
			"accounts.path", `must be set for backend "sqlite"`},
		{"redis url missing", func(c *Config) { c.Accounts.Backend = BackendRedis },
			"accounts.redis_url", `must be set for backend "redis"`},
		{"redis url scheme", func(c *Config) {
			c.Accounts.Backend, c.Accounts.RedisURL = BackendRedis, "http://:pw@redis:6379"
		}, "accounts.redis_url", "must be a redis://"},
		{"redis prefix empty", func(c *Config) {
			c.Accounts.Backend, c.Accounts.RedisURL = BackendRedis, "redis://127.0.0.1:6379/0"
			c.Accounts.RedisPrefix = ""
		}, "accounts.redis_prefix", `must be set`},
		{"redis prefix space", func(c *Config) {
			c.Accounts.Backend, c.Accounts.RedisURL = BackendRedis, "unix:///run/redis.sock"
			c.Accounts.RedisPrefix = "site a:"
		}, "accounts.redis_prefix", `got "site a:"`},
		{"ttl", func(c *Config) { c.Accounts.TTL.Duration = -time.Hour },
			"accounts.ttl", "must not be negative"},
		{"allow empty", func(c *Config) { c.Accounts.Allow = []string{"a@b", " "} },
			"accounts.allow[1]", "must not be empty"},
		{"log level", func(c *Config) { c.Log.Level = "verbose" },
			"log.level", `got "verbose"`},
		{"log format", func(c *Config) { c.Log.Format = "text" },
			"log.format", `must be "json" or "console", got "text"`},
		{"command", func(c *Config) { c.Notify.Command = []string{"", "x"} },
			"notify.command[0]", "must name the program"},
		{"webhook scheme", func(c *Config) { c.Notify.Webhook = []string{"ftp://h/x"} },
			"notify.webhook[0]", "must be an http:// or https:// URL"},
		{"webhook no host", func(c *Config) {
			c.Notify.Webhook = []string{"https://h.test/", "https:///x"}
		}, "notify.webhook[1]", "must be an http"},
		{"notify timeout", func(c *Config) { c.Notify.Timeout.Duration = 0 },
			"notify.timeout", "must be more than 0"},
		{"http listen", func(c *Config) { c.HTTP.Listen = "9899" },
			"http.listen", `want HOST:PORT or empty (off), got "9899"`},
		{"http listen port", func(c *Config) { c.HTTP.Listen = "127.0.0.1:http" },
			"http.listen", "want HOST:PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.edit(&c)
			ps := problemsOf(t, c.Validate())
			if len(ps) != 1 || ps[0].Key != tt.key || !strings.Contains(ps[0].Msg, tt.msg) {
				t.Fatalf("got %q; want one problem at %s containing %q", ps, tt.key, tt.msg)
			}
			if !strings.HasPrefix(ps[0].Error(), tt.key+": ") {
				t.Errorf("Error() = %q, want the key path first", ps[0].Error())
			}
		})
	}
}

func TestValidateAccepts(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *Config)
	}{
		{"valid", func(*Config) {}},
		{"quarantine", func(c *Config) { c.Action.Mode = ModeQuarantine }},
		{"log", func(c *Config) { c.Action.Mode = ModeLog }},
		{"tempfail", func(c *Config) { c.Milter.OnError = OnErrorTempfail }},
		{"reject_text bare code", func(c *Config) { c.Action.RejectText = "5.7.1" }},
		{"reject_text longest", func(c *Config) {
			c.Action.RejectText = "5.7.1 " + strings.Repeat("x", 500) // 506 characters
		}},
		{"reject_text 3-digit parts", func(c *Config) { c.Action.RejectText = "5.123.456 x" }},
		{"redis", func(c *Config) {
			c.Accounts.Backend, c.Accounts.Path = BackendRedis, ""
			c.Accounts.RedisURL = "rediss://:pw@redis.example.test:6380/1"
		}},
		{"recipient list", func(c *Config) {
			c.Lists[0].Kind, c.Lists[0].TestPoint = KindRecipient, "test@example.test"
		}},
		{"IPv6 test point", func(c *Config) { c.Lists[0].TestPoint = "::2" }},
		{"underscore zone", func(c *Config) { c.Lists[0].Zone = "_bl.example.test" }},
		{"webhooks", func(c *Config) {
			c.Notify.Webhook = []string{"http://127.0.0.1:8080/hook", "https://h.test/x?y=1"}
		}},
		{"http listen", func(c *Config) { c.HTTP.Listen = "127.0.0.1:9899" }},
		{"http listen all", func(c *Config) { c.HTTP.Listen = ":9899" }},
		{"http listen IPv6", func(c *Config) { c.HTTP.Listen = "[::1]:9899" }},
		{"debug", func(c *Config) { c.Log.Level, c.Log.Format = "debug", "console" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.edit(&c)
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestValidateAllAtOnce(t *testing.T) {
	c := valid()
	c.Milter.OnError = "x"
	c.Lists[0].Kind = "x"
	c.Log.Level = "x"
	c.HTTP.Listen = "x"
	ps := problemsOf(t, c.Validate())
	var keys []string
	for _, p := range ps {
		keys = append(keys, p.Key)
	}
	want := "milter.on_error list[0].kind log.level http.listen"
	if got := strings.Join(keys, " "); got != want {
		t.Errorf("keys %q, want %q", got, want)
	}
	if n := strings.Count(c.Validate().Error(), "\n") + 1; n != 4 {
		t.Errorf("Error() has %d lines, want 4", n)
	}
}

func TestParseListen(t *testing.T) {
	tests := []struct {
		in, network, address string
	}{
		{"inet:127.0.0.1:8899", "tcp4", "127.0.0.1:8899"},
		{"inet:localhost:8899", "tcp4", "localhost:8899"},
		{"inet::8899", "tcp4", ":8899"},
		{"inet:8899", "tcp4", ":8899"},
		{"inet:8899@127.0.0.1", "tcp4", "127.0.0.1:8899"},
		{"inet:8899@localhost", "tcp4", "localhost:8899"},
		{"inet:127.0.0.1:0", "tcp4", "127.0.0.1:0"},
		{"inet:[::1]:8899", "tcp6", "[::1]:8899"},
		{"inet6:[::1]:8899", "tcp6", "[::1]:8899"},
		{"inet6:::1:8899", "tcp6", "[::1]:8899"},
		{"inet6:[2001:db8::1]:8899", "tcp6", "[2001:db8::1]:8899"},
		{"inet6:8899@::1", "tcp6", "[::1]:8899"},
		{"inet6:8899@[::1]", "tcp6", "[::1]:8899"},
		{"inet6:localhost:8899", "tcp6", "localhost:8899"},
		{"inet6:8899", "tcp6", ":8899"},
		{"unix:/run/authbl-milter/milter.sock", "unix", "/run/authbl-milter/milter.sock"},
		{"local:/run/milter.sock", "unix", "/run/milter.sock"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			network, address, err := ParseListen(tt.in)
			if err != nil || network != tt.network || address != tt.address {
				t.Fatalf("got %q, %q, %v; want %q, %q", network, address, err,
					tt.network, tt.address)
			}
		})
	}

	bad := []struct{ in, msg string }{
		{"", "want inet:HOST:PORT"},
		{"127.0.0.1:8899", `unknown socket type "127.0.0.1"`},
		{"tcp:127.0.0.1:8899", `unknown socket type "tcp"`},
		{"inet:127.0.0.1", `port "127.0.0.1" is not a number`},
		{"inet:127.0.0.1:", `port "" is not a number`},
		{"inet:127.0.0.1:65536", "from 0 to 65535"},
		{"inet:127.0.0.1:-1", "is not a number"},
		{"inet:bad host:25", `host "bad host"`},
		{"inet6:127.0.0.1:8899", "use inet:"},
		{"unix:", "must be absolute"},
		{"unix:milter.sock", "must be absolute"},
	}
	for _, tt := range bad {
		t.Run("bad "+tt.in, func(t *testing.T) {
			_, _, err := ParseListen(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.msg) ||
				!strings.Contains(err.Error(), `"`+tt.in+`"`) {
				t.Fatalf("error %v: want one naming %q and containing %q", err, tt.in, tt.msg)
			}
		})
	}
}

func TestDefaultMatch(t *testing.T) {
	// The prefixes cover 127.0.0.0/8 except 127.255.255.0/24 exactly:
	// disjoint, inside 127/8, clear of the error block, summing to its size.
	all := netip.MustParsePrefix("127.0.0.0/8")
	errBlock := netip.MustParsePrefix("127.255.255.0/24")
	total := 0
	for i, p := range defaultMatch {
		if !all.Contains(p.Addr()) || p.Bits() < 8 || p.Overlaps(errBlock) || p != p.Masked() {
			t.Errorf("prefix %v is out of place", p)
		}
		for _, q := range defaultMatch[i+1:] {
			if p.Overlaps(q) {
				t.Errorf("%v overlaps %v", p, q)
			}
		}
		total += 1 << (32 - p.Bits())
	}
	if want := 1<<24 - 256; total != want {
		t.Errorf("the prefixes hold %d addresses, want %d", total, want)
	}

	l := List{Name: "l", Kind: KindIP, Zone: "bl.test"} // no Match, not validated
	for addr, want := range map[string]bool{
		"127.0.0.0": true, "127.0.0.2": true, "127.0.0.4": true, "127.255.254.255": true,
		"127.255.255.0": false, "127.255.255.252": false, "127.255.255.254": false,
		"127.255.255.255": false, "126.255.255.255": false, "128.0.0.0": false,
		"10.0.0.1": false, "::ffff:127.0.0.2": true, "::1": false,
	} {
		if got := l.Matches(netip.MustParseAddr(addr)); got != want {
			t.Errorf("default Matches(%s) = %v, want %v", addr, got, want)
		}
	}
	if DefaultMatchPrefixes()[0] = (netip.Prefix{}); defaultMatch[0] == (netip.Prefix{}) {
		t.Error("DefaultMatchPrefixes shares its slice")
	}
}

func TestListMatches(t *testing.T) {
	c := valid()
	c.Lists[0].Match = []string{"127.0.0.4", "127.0.1.0/24", "127.0.2.9/24"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	l := c.Lists[0]
	for addr, want := range map[string]bool{
		"127.0.0.4": true, "127.0.0.2": false, "127.0.1.200": true, "127.0.2.1": true,
		"127.0.3.1": false, "127.255.255.254": false,
	} {
		if got := l.Matches(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Matches(%s) = %v, want %v", addr, got, want)
		}
	}
}
