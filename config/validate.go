package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Validate checks every value and returns all problems at once as *Errors,
// or nil. It also normalises in place: it adds port 53 to DNS servers,
// lowercases zones and allowed accounts, and fills List.MatchPrefixes.
// Load has already called it; call it again after changing a Config.
func (c *Config) Validate() error {
	var p problems
	c.check(&p)
	if len(c.Lists) == 0 {
		p.add("list", "%s", errNoLists)
	}
	return p.err("")
}

// check is Validate without the test for at least one list, which Load
// makes only after adding the Abusix lists.
func (c *Config) check(p *problems) {
	c.Milter.check(p)
	c.Action.check(p)
	c.DNS.check(p)
	seen := make(map[string]int)
	for i := range c.Lists {
		path := fmt.Sprintf("list[%d]", i)
		l := &c.Lists[i]
		l.check(p, path)
		if j, dup := seen[l.Name]; dup && l.Name != "" {
			p.add(path+".name", "%q is already the name of list[%d]", l.Name, j)
		} else {
			seen[l.Name] = i
		}
	}
	c.Accounts.check(p)
	c.Log.check(p)
	c.Notify.check(p)
	c.HTTP.check(p)
	c.Exempt.check(p)
}

func (m *Milter) check(p *problems) {
	if _, _, err := ParseListen(m.Listen); err != nil {
		p.add("milter.listen", "%v", err)
	}
	oneOf(p, "milter.on_error", m.OnError, OnErrorAccept, OnErrorTempfail)
	positive(p, "milter.timeout", m.Timeout)
	if v, err := strconv.ParseUint(m.SocketMode, 8, 32); err != nil || v > 0o777 {
		p.add("milter.socket_mode", "must be an octal permission such as \"0660\", got %q",
			m.SocketMode)
	}
}

func (a *Action) check(p *problems) {
	oneOf(p, "action.mode", a.Mode, ModeReject, ModeQuarantine, ModeLog)
	if err := checkReplyText(a.RejectText); err != nil {
		p.add("action.reject_text", "%v", err)
	}
}

// checkReplyText checks text for the reply "550 TEXT": it must start with
// an RFC 3463 enhanced status code of class 5 and fit one reply line
// (RFC 5321 4.5.3.1.5: 512 octets with the code and CRLF).
func checkReplyText(text string) error {
	for _, r := range text {
		if r < ' ' || r > '~' {
			return fmt.Errorf("must be printable ASCII on one line, got %q", text)
		}
	}
	if strings.Contains(text, "%") {
		// Sendmail expands % in a milter's reply text.
		return fmt.Errorf("must not contain %%: Sendmail would expand it, got %q", text)
	}
	code, _, _ := strings.Cut(text, " ")
	parts := strings.Split(code, ".")
	if len(parts) != 3 || parts[0] != "5" || !digits(parts[1], 3) || !digits(parts[2], 3) {
		return fmt.Errorf("must start with an enhanced status code 5.X.Y"+
			" (such as 5.7.1), got %q", text)
	}
	if limit := 512 - len("550 \r\n"); len(text) > limit {
		return fmt.Errorf("is %d characters long; at most %d fit in a 512-octet reply line",
			len(text), limit)
	}
	return nil
}

// digits reports whether s is 1 to n decimal digits.
func digits(s string, n int) bool {
	if s == "" || len(s) > n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func (d *DNS) check(p *problems) {
	for i, s := range d.Servers {
		norm, err := normServer(s)
		if err != nil {
			p.add(fmt.Sprintf("dns.servers[%d]", i), "%v", err)
			continue
		}
		d.Servers[i] = norm
	}
	positive(p, "dns.timeout", d.Timeout)
	if d.Attempts < 1 || d.Attempts > 10 {
		p.add("dns.attempts", "must be from 1 to 10, got %d", d.Attempts)
	}
	if d.CacheSize < 0 || d.CacheSize > 10_000_000 {
		p.add("dns.cache_size", "must be from 0 (off) to 10000000 entries, got %d", d.CacheSize)
	}
	if d.CacheMinTTL.Duration < 0 {
		p.add("dns.cache_min_ttl", "must not be negative, got %s", d.CacheMinTTL.Duration)
	}
	if d.CacheMaxTTL.Duration < d.CacheMinTTL.Duration {
		p.add("dns.cache_max_ttl", "must not be less than cache_min_ttl (%s), got %s",
			d.CacheMinTTL.Duration, d.CacheMaxTTL.Duration)
	}
	if h := d.HealthInterval.Duration; h != 0 && h < 10*time.Second {
		p.add("dns.health_interval", "must be 0 (off) or at least 10s, got %s", h)
	}
}

// normServer returns a resolver address as IP:PORT, adding port 53.
func normServer(s string) (string, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Port() != 0 {
		return ap.String(), nil
	}
	host := strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	if a, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(a, 53).String(), nil
	}
	return "", fmt.Errorf("want an IP address and an optional port, such as"+
		` "127.0.0.1", "127.0.0.1:53" or "[::1]:53", got %q`, s)
}

func (l *List) check(p *problems, path string) {
	switch {
	case l.Name == "":
		p.add(path+".name", "must be set")
	case !isName(l.Name):
		p.add(path+".name", "must be letters, digits, '.', '_' and '-', got %q", l.Name)
	}
	oneOf(p, path+".kind", l.Kind, KindIP, KindRecipient)

	l.Zone = strings.TrimSuffix(strings.ToLower(l.Zone), ".")
	if l.Secret == "" {
		l.Secret = providerKey(l.Zone)
	}
	switch {
	case l.Zone == "" && l.File == "":
		p.add(path+".zone", "must be set (or file, for a list served from a local file)")
	case l.Zone != "" && l.File != "":
		p.add(path+".file", "set either zone or file, not both")
	case l.File != "":
	case !validDNSName(l.Zone):
		p.add(path+".zone", "must be a DNS name, got %q", l.DisplayZone())
	}
	l.checkFile(p, path)

	prefixes := make([]netip.Prefix, 0, len(l.Match))
	for i, m := range l.Match {
		pfx, err := parseMatch(m)
		if err != nil {
			p.add(fmt.Sprintf("%s.match[%d]", path, i), "%v", err)
			continue
		}
		prefixes = append(prefixes, pfx)
	}
	if len(l.Match) == 0 {
		prefixes = DefaultMatchPrefixes()
	}
	l.MatchPrefixes = prefixes

	l.checkTest(p, path)
}

func (l *List) checkTest(p *problems, path string) {
	if l.TestPoint != "" {
		switch l.Kind {
		case KindIP:
			if _, err := netip.ParseAddr(l.TestPoint); err != nil {
				p.add(path+".test_point", "must be an IP address for a list of kind"+
					" ip, got %q", l.TestPoint)
			}
		case KindRecipient:
			if !strings.Contains(l.TestPoint, "@") || strings.ContainsAny(l.TestPoint, " \t") {
				p.add(path+".test_point", "must be a mail address for a list of kind"+
					" recipient, got %q", l.TestPoint)
			}
		}
	}
	if l.TestExpect == "" {
		return
	}
	if l.TestPoint == "" {
		p.add(path+".test_expect", "needs test_point")
		return
	}
	a, err := netip.ParseAddr(l.TestExpect)
	switch {
	case err != nil || !a.Is4():
		p.add(path+".test_expect", "must be an IPv4 address (an A record), got %q",
			l.TestExpect)
	case !p.has(path+".match") && !l.Matches(a):
		p.add(path+".test_expect", "%s is outside match, so the self-test could"+
			" never pass", a)
	}
}

// checkFile checks file and format: an absolute path, and a format that
// holds what the list's kind looks up.
func (l *List) checkFile(p *problems, path string) {
	if l.File == "" {
		if l.Format != "" {
			p.add(path+".format", "is only for a list with file")
		}
		return
	}
	if !filepath.IsAbs(l.File) {
		p.add(path+".file", "must be an absolute path, got %q", l.File)
	}
	formats := []string{FormatIP4Set, FormatIP4TSet, FormatIP4Trie, FormatIP6Trie, FormatIP6TSet,
		FormatCombined}
	if l.Kind == KindRecipient {
		formats = []string{FormatDNSet, FormatCombined}
	}
	if l.Format == "" {
		p.add(path+".format", "must be set with file: one of %s", strings.Join(formats, ", "))
		return
	}
	if l.Kind == KindIP || l.Kind == KindRecipient {
		oneOf(p, path+".format", l.Format, formats...)
	}
}

// parseMatch parses one match entry: an IPv4 address or CIDR.
func parseMatch(s string) (netip.Prefix, error) {
	var pfx netip.Prefix
	if a, err := netip.ParseAddr(s); err == nil {
		pfx = netip.PrefixFrom(a, a.BitLen())
	} else if pfx, err = netip.ParsePrefix(s); err != nil {
		return pfx, fmt.Errorf("must be an IPv4 address or CIDR, got %q", s)
	}
	if !pfx.Addr().Is4() {
		return pfx, fmt.Errorf("must be IPv4, got %q: lists answer with A records", s)
	}
	return pfx.Masked(), nil
}

// providers are the domains of zones that carry the customer's key as
// their first label, as in KEY.authbl.mail.abusix.zone.
var providers = []string{".mail.abusix.zone", ".dq.spamhaus.net"}

// providerKey returns the key in a zone of a known provider, or "". It
// looks for the provider's domain anywhere, so that the key stays hidden
// in the message about a zone that is invalid after it.
func providerKey(zone string) string {
	first, rest, _ := strings.Cut(zone, ".")
	for _, domain := range providers {
		if strings.Contains(rest, domain) {
			return first
		}
	}
	return ""
}

func (a *Accounts) check(p *problems) {
	oneOf(p, "accounts.backend", a.Backend, BackendSQLite, BackendRedis)
	switch a.Backend {
	case BackendSQLite:
		if a.Path == "" {
			p.add("accounts.path", "must be set for backend %q", BackendSQLite)
		}
	case BackendRedis:
		u, err := url.Parse(a.RedisURL)
		switch {
		case a.RedisURL == "":
			p.add("accounts.redis_url", "must be set for backend %q", BackendRedis)
		case err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix"):
			// The URL may hold a password: do not quote it.
			p.add("accounts.redis_url", "must be a redis://, rediss:// or unix:// URL")
		}
		if a.RedisPrefix == "" || strings.IndexFunc(a.RedisPrefix, func(r rune) bool {
			return r <= ' ' || r == 0x7f
		}) >= 0 {
			p.add("accounts.redis_prefix", "must be set, without spaces or control"+
				" characters, for backend %q, got %q", BackendRedis, a.RedisPrefix)
		}
	}
	if a.TTL.Duration < 0 {
		p.add("accounts.ttl", "must not be negative, got %s", a.TTL.Duration)
	}
	for i, acct := range a.Allow {
		a.Allow[i] = strings.ToLower(strings.TrimSpace(acct))
		if a.Allow[i] == "" {
			p.add(fmt.Sprintf("accounts.allow[%d]", i), "must not be empty")
		}
	}
}

func (l *Log) check(p *problems) {
	oneOf(p, "log.level", l.Level, "debug", "info", "warn", "error")
	oneOf(p, "log.format", l.Format, "json", "console")
}

func (n *Notify) check(p *problems) {
	if len(n.Command) > 0 && n.Command[0] == "" {
		p.add("notify.command[0]", "must name the program to run")
	}
	for i, s := range n.Webhook {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			p.add(fmt.Sprintf("notify.webhook[%d]", i), "must be an http:// or https:// URL")
		}
	}
	positive(p, "notify.timeout", n.Timeout)
}

func (h *HTTP) check(p *problems) {
	if h.Listen == "" {
		return
	}
	host, port, err := net.SplitHostPort(h.Listen)
	if err == nil {
		err = checkHostPort(host, port)
	}
	if err != nil {
		p.add("http.listen", "want HOST:PORT or empty (off), got %q", h.Listen)
	}
}

// ParseListen turns a milter socket specification into arguments for
// net.Listen. It accepts Postfix's notation (inet:HOST:PORT, inet6:HOST:PORT,
// inet6:[HOST]:PORT, unix:/path) and Sendmail's (inet:PORT@HOST, inet:PORT,
// local:/path). An empty HOST listens on every address of the family. The
// network is "tcp4" for inet and "tcp6" for inet6, except that an IP
// literal decides by its own family; a unix path must be absolute.
func ParseListen(s string) (network, address string, err error) {
	kind, rest, ok := strings.Cut(s, ":")
	if !ok {
		return "", "", fmt.Errorf("invalid listen address %q: want inet:HOST:PORT,"+
			" inet6:[HOST]:PORT or unix:/PATH", s)
	}
	switch kind {
	case "unix", "local":
		if !strings.HasPrefix(rest, "/") {
			return "", "", fmt.Errorf("invalid listen address %q: the socket path must be"+
				" absolute", s)
		}
		return "unix", rest, nil
	case "inet", "inet6":
		network, address, err = parseInet(rest, kind == "inet6")
		if err != nil {
			return "", "", fmt.Errorf("invalid listen address %q: %w", s, err)
		}
		return network, address, nil
	}
	return "", "", fmt.Errorf("invalid listen address %q: unknown socket type %q:"+
		" want inet, inet6 or unix", s, kind)
}

func parseInet(rest string, v6 bool) (network, address string, err error) {
	var host, port string
	if p, h, ok := strings.Cut(rest, "@"); ok { // Sendmail: PORT@HOST
		host, port = h, p
	} else if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		host, port = rest[:i], rest[i+1:]
	} else { // Sendmail: PORT alone
		port = rest
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if err := checkHostPort(host, port); err != nil {
		return "", "", err
	}

	network = "tcp4"
	if v6 {
		network = "tcp6"
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if v6 && a.Is4() {
			return "", "", fmt.Errorf("%s is an IPv4 address: use inet:", host)
		}
		network = "tcp4"
		if a.Is6() {
			network = "tcp6"
		}
	}
	return network, net.JoinHostPort(host, port), nil
}

// checkHostPort checks a listening host (IP, name or empty) and a port.
func checkHostPort(host, port string) error {
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	if _, err := netip.ParseAddr(host); err != nil && host != "" && !validDNSName(host) {
		return fmt.Errorf("host %q is neither an IP address nor a host name", host)
	}
	return nil
}

func oneOf(p *problems, key, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	quoted := make([]string, len(allowed))
	for i, a := range allowed {
		quoted[i] = strconv.Quote(a)
	}
	want := "one of " + strings.Join(quoted, ", ")
	if len(quoted) == 2 {
		want = quoted[0] + " or " + quoted[1]
	}
	p.add(key, "must be %s, got %q", want, v)
}

func positive(p *problems, key string, d Duration) {
	if d.Duration <= 0 {
		p.add(key, "must be more than 0, got %s", d.Duration)
	}
}

// isName reports whether s is a usable list name: it shows up in logs and
// metric labels.
func isName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isAlnum(c) || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return s != ""
}

// validDNSName reports whether s is a DNS name of letters, digits, hyphens
// and underscores, without a trailing dot.
func validDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if !validLabel(label, true) {
			return false
		}
	}
	return true
}

// validLabel reports whether s is one DNS label of letters, digits and
// inner hyphens, with underscores too when underscore is set.
func validLabel(s string, underscore bool) bool {
	if s == "" || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isAlnum(c) || c == '-' || c == '_' && underscore) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
