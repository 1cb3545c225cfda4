package lookup_test

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/authbl-milter/authbl-milter/lookup"
)

// FuzzNormalizeRecipient checks the normal form that recipient lists
// hash: no panic; a result is non-empty, lowercase, free of control
// characters and of surrounding space, and a fixed point (normalising it
// again gives it back); a failure wraps ErrBadAddress.
func FuzzNormalizeRecipient(f *testing.F) {
	for _, s := range []string{
		"user@example.com",
		"<User@Example.COM>",
		"<user@example.com> NOTIFY=NEVER",
		"user@example.com ORCPT=rfc822;user@example.com",
		`"John Doe"@Example.com`,
		`<"a>b"@example.com>`,
		`<"a\"b"@example.com>`,
		"  <x@example.org>  ",
		"<>",
		"<",
		"",
		"\x00",
		"a\rb@example.org",
		"DropBox@Example.NET",
		"İ@example.com",
		"\u212a@example.com", // Kelvin sign, lowercases to ASCII k
		"\xff\xfe@example.com",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := lookup.NormalizeRecipient(in)
		if err != nil {
			if !errors.Is(err, lookup.ErrBadAddress) {
				t.Fatalf("Normalize(%q): error %v does not wrap ErrBadAddress", in, err)
			}
			return
		}
		if out == "" {
			t.Fatalf("Normalize(%q) = empty, no error", in)
		}
		// Invalid UTF-8 (8-bit addresses) keeps its bytes; only ASCII
		// is lowered there, so that no two addresses share a hash.
		if utf8.ValidString(out) && strings.ToLower(out) != out ||
			strings.ContainsFunc(out, func(r rune) bool { return 'A' <= r && r <= 'Z' }) {
			t.Fatalf("Normalize(%q) = %q, not lowercase", in, out)
		}
		if strings.TrimSpace(out) != out {
			t.Fatalf("Normalize(%q) = %q, surrounding space", in, out)
		}
		if i := strings.IndexFunc(out, unicode.IsControl); i >= 0 {
			r, _ := utf8.DecodeRuneInString(out[i:])
			t.Fatalf("Normalize(%q) = %q, control character %U", in, out, r)
		}
		again, err := lookup.NormalizeRecipient(out)
		if err != nil || again != out {
			t.Fatalf("not a fixed point: Normalize(%q) = %q, Normalize(%q) = %q, %v",
				in, out, out, again, err)
		}
	})
}

// FuzzParseClientAddr checks client address parsing: no panic; a result
// is valid, IPv4 rather than IPv4-mapped, without a zone, and survives
// a round trip through its string form; a failure wraps ErrBadAddress
// and an error message stays short whatever the input.
func FuzzParseClientAddr(f *testing.F) {
	for _, s := range []string{
		"192.0.2.1", "2001:db8::1", "IPv6:2001:db8::1", "ipv6:2001:db8::1",
		"[192.0.2.1]", "[IPv6:2001:db8::1]", "::ffff:192.0.2.1", "fe80::1%eth0",
		"::ffff:192.0.2.1%eth0", "IPv6:", "[]", "", " 192.0.2.1 ", "garbage",
		"IPv6:192.0.2.1", "IPv6:::ffff:192.0.2.1", "0.0.0.0", "::",
		"[[192.0.2.1]]", "192.0.2.1\x00", strings.Repeat("1", 1000),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		ip, err := lookup.ParseClientAddr(in)
		if err != nil {
			if !errors.Is(err, lookup.ErrBadAddress) {
				t.Fatalf("Parse(%q): error %v does not wrap ErrBadAddress", in, err)
			}
			if len(err.Error()) > 512 {
				t.Fatalf("Parse(%.40q...): error of %d bytes", in, len(err.Error()))
			}
			return
		}
		if !ip.IsValid() || ip.Zone() != "" || ip.Is4In6() {
			t.Fatalf("Parse(%q) = %v: invalid, zoned or mapped", in, ip)
		}
		back, err := lookup.ParseClientAddr(ip.String())
		if err != nil || back != ip {
			t.Fatalf("round trip: Parse(%q) = %v, Parse(%q) = %v, %v", in, ip, ip, back, err)
		}
		if name := lookup.IPQueryName(ip, "zone.test"); !strings.HasSuffix(name, ".zone.test.") ||
			(ip.Is4() && strings.Count(name, ".") != 6) || (ip.Is6() && strings.Count(name, ".") != 34) {
			t.Fatalf("IPQueryName(%v) = %q", ip, name)
		}
	})
}
