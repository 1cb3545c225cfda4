package config

import (
	"strings"
	"testing"
	"time"
)

// The keys of the DNS cache, attempts, health checks and local list files.

func TestDefaultLookupKeys(t *testing.T) {
	d := Default().DNS
	if d.Attempts != 2 || d.CacheSize != 10000 || d.CacheMinTTL.Duration != 5*time.Second ||
		d.CacheMaxTTL.Duration != time.Hour || d.HealthInterval.Duration != 5*time.Minute {
		t.Fatalf("defaults %+v", d)
	}
}

func TestValidateLookupKeys(t *testing.T) {
	fileList := func(c *Config) {
		c.Lists[0].Zone, c.Lists[0].File, c.Lists[0].Format = "", "/var/lib/bl/authbl.zone", "ip4set"
	}
	tests := []struct {
		name string
		edit func(c *Config)
		key  string
		msg  string
	}{
		{"attempts 0", func(c *Config) { c.DNS.Attempts = 0 },
			"dns.attempts", "must be from 1 to 10, got 0"},
		{"attempts 11", func(c *Config) { c.DNS.Attempts = 11 },
			"dns.attempts", "got 11"},
		{"cache size negative", func(c *Config) { c.DNS.CacheSize = -1 },
			"dns.cache_size", "must be from 0 (off)"},
		{"cache size huge", func(c *Config) { c.DNS.CacheSize = 20_000_000 },
			"dns.cache_size", "got 20000000"},
		{"cache min ttl negative", func(c *Config) { c.DNS.CacheMinTTL.Duration = -time.Second },
			"dns.cache_min_ttl", "must not be negative"},
		{"cache max below min", func(c *Config) { c.DNS.CacheMaxTTL.Duration = time.Second },
			"dns.cache_max_ttl", "must not be less than cache_min_ttl (5s), got 1s"},
		{"health interval short", func(c *Config) { c.DNS.HealthInterval.Duration = time.Second },
			"dns.health_interval", "must be 0 (off) or at least 10s, got 1s"},
		{"zone and file", func(c *Config) { fileList(c); c.Lists[0].Zone = "bl.test" },
			"list[0].file", "set either zone or file, not both"},
		{"neither zone nor file", func(c *Config) { c.Lists[0].Zone = "" },
			"list[0].zone", "must be set (or file"},
		{"file relative", func(c *Config) { fileList(c); c.Lists[0].File = "authbl.zone" },
			"list[0].file", `must be an absolute path, got "authbl.zone"`},
		{"file without format", func(c *Config) { fileList(c); c.Lists[0].Format = "" },
			"list[0].format", "must be set with file: one of ip4set, ip4tset"},
		{"unknown format", func(c *Config) { fileList(c); c.Lists[0].Format = "ip5set" },
			"list[0].format", `got "ip5set"`},
		{"names for an IP list", func(c *Config) { fileList(c); c.Lists[0].Format = "dnset" },
			"list[0].format", `got "dnset"`},
		{"IPs for a recipient list", func(c *Config) {
			fileList(c)
			c.Lists[0].Kind, c.Lists[0].TestPoint, c.Lists[0].TestExpect = KindRecipient, "", ""
		}, "list[0].format", `must be "dnset" or "combined", got "ip4set"`},
		{"format without file", func(c *Config) { c.Lists[0].Format = "ip4set" },
			"list[0].format", "is only for a list with file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.edit(&c)
			ps := problemsOf(t, c.Validate())
			if len(ps) != 1 || ps[0].Key != tt.key || !strings.Contains(ps[0].Msg, tt.msg) {
				t.Fatalf("got %q; want one problem at %s containing %q", ps, tt.key, tt.msg)
			}
		})
	}
}

func TestValidateLookupKeysAccepts(t *testing.T) {
	tests := []struct {
		name string
		edit func(c *Config)
	}{
		{"cache off", func(c *Config) { c.DNS.CacheSize = 0 }},
		{"no floor", func(c *Config) { c.DNS.CacheMinTTL.Duration = 0 }},
		{"min equals max", func(c *Config) { c.DNS.CacheMaxTTL = c.DNS.CacheMinTTL }},
		{"health off", func(c *Config) { c.DNS.HealthInterval.Duration = 0 }},
		{"one attempt", func(c *Config) { c.DNS.Attempts = 1 }},
		{"ip file", func(c *Config) {
			c.Lists[0].Zone, c.Lists[0].File, c.Lists[0].Format = "", "/l/authbl.zone", "combined"
		}},
		{"recipient file", func(c *Config) {
			c.Lists[0].Zone, c.Lists[0].File, c.Lists[0].Format = "", "/l/rcpt.zone", "dnset"
			c.Lists[0].Kind, c.Lists[0].TestPoint, c.Lists[0].TestExpect = KindRecipient, "", ""
		}},
		{"ip6trie file", func(c *Config) {
			c.Lists[0].Zone, c.Lists[0].File, c.Lists[0].Format = "", "/l/v6.zone", "ip6trie"
		}},
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

func TestParseLookupKeys(t *testing.T) {
	doc := `
[dns]
attempts = 3
cache_size = 0
cache_min_ttl = "0s"
cache_max_ttl = "10m"
health_interval = "1m"

[[list]]
name = "mirror"
kind = "ip"
file = "/var/lib/rbldnsd/abusix/authbl.zone"
format = "combined"
match = ["127.0.0.4"]
`
	c, err := noEnv.parse([]byte(doc), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	d := c.DNS
	if d.Attempts != 3 || d.CacheSize != 0 || d.CacheMinTTL.Duration != 0 ||
		d.CacheMaxTTL.Duration != 10*time.Minute || d.HealthInterval.Duration != time.Minute {
		t.Errorf("dns %+v", d)
	}
	l := c.Lists[0]
	if l.File != "/var/lib/rbldnsd/abusix/authbl.zone" || l.Format != "combined" || l.Zone != "" {
		t.Errorf("list %+v", l)
	}

	_, err = noEnv.parse([]byte("[dns]\nattempts = \"two\"\n"+oneList), "t.toml")
	ps := problemsOf(t, err)
	if len(ps) != 1 || ps[0].Key != "dns.attempts" || !strings.Contains(ps[0].Msg, "an integer") {
		t.Errorf("problems %q", ps)
	}
}
