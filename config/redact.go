package config

import (
	"fmt"
	"io"
	"net/url"
	"slices"

	"github.com/BurntSushi/toml"
)

// Redacted returns a deep copy of c that is safe to show: the Abusix key,
// the webhook secret, the password in the Redis URL and in webhook URLs,
// and each list's Secret (in Zone too) are replaced by Redacted. Empty
// values stay empty, so the copy still shows whether a secret is set.
func (c *Config) Redacted() Config {
	r := *c
	r.DNS.Servers = slices.Clone(c.DNS.Servers)
	r.Abusix.APIKey = redact(c.Abusix.APIKey)
	r.Lists = make([]List, len(c.Lists))
	for i, l := range c.Lists {
		l.Zone = l.DisplayZone()
		l.Secret = redact(l.Secret)
		l.Match = slices.Clone(l.Match)
		l.MatchPrefixes = slices.Clone(l.MatchPrefixes)
		r.Lists[i] = l
	}
	r.Accounts.RedisURL = redactURL(c.Accounts.RedisURL)
	r.Accounts.Allow = slices.Clone(c.Accounts.Allow)
	r.Exempt.ClientNetworks = slices.Clone(c.Exempt.ClientNetworks)
	r.Exempt.Recipients = slices.Clone(c.Exempt.Recipients)
	r.Exempt.Networks = slices.Clone(c.Exempt.Networks)
	r.Notify.Command = slices.Clone(c.Notify.Command)
	r.Notify.Webhook = make([]string, len(c.Notify.Webhook))
	for i, u := range c.Notify.Webhook {
		r.Notify.Webhook[i] = redactURL(u)
	}
	r.Notify.WebhookSecret = redact(c.Notify.WebhookSecret)
	return r
}

// WriteTOML writes the redacted configuration as TOML, every key included;
// it is what configtest prints. Lists that [abusix] added appear as
// [[list]] tables, so the output shows the effective lists but is not
// meant to be loaded again.
func (c *Config) WriteTOML(w io.Writer) error {
	r := c.Redacted()
	for _, s := range []*[]string{&r.DNS.Servers, &r.Accounts.Allow,
		&r.Notify.Command, &r.Notify.Webhook} {
		if *s == nil {
			*s = []string{} // the encoder leaves out nil slices
		}
	}
	for i := range r.Lists {
		if r.Lists[i].Match == nil {
			r.Lists[i].Match = []string{}
		}
	}

	enc := toml.NewEncoder(w)
	enc.Indent = ""
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("config: write: %w", err)
	}
	return nil
}

func redact(s string) string {
	if s == "" {
		return ""
	}
	return Redacted
}

// redactURL replaces the password in a URL; a URL that does not parse is
// replaced whole, since it cannot be told apart from a secret.
func redactURL(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		return Redacted
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), Redacted)
	}
	return u.String()
}
