package lookup

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrBadAddress is wrapped by the errors of ParseClientAddr and
// NormalizeRecipient.
var ErrBadAddress = errors.New("bad address")

// ParseClientAddr parses a client address as an MTA reports it: a plain
// IPv4 or IPv6 address, Sendmail's "IPv6:" prefix, or either in square
// brackets. An IPv4-mapped IPv6 address is returned as IPv4, and an IPv6
// zone is dropped.
func ParseClientAddr(s string) (netip.Addr, error) {
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "[") && strings.HasSuffix(t, "]") {
		t = t[1 : len(t)-1]
	}
	if len(t) >= 5 && strings.EqualFold(t[:5], "IPv6:") {
		t = t[5:]
	}
	ip, err := netip.ParseAddr(t)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: client address %q", ErrBadAddress, clip(s))
	}
	return ip.Unmap().WithZone(""), nil
}

// IPQueryName returns the name under which a list with the given zone
// publishes ip: reversed octets for IPv4, reversed nibbles for IPv6.
func IPQueryName(ip netip.Addr, zone string) string {
	ip = ip.Unmap()
	var b strings.Builder
	if ip.Is4() {
		a := ip.As4()
		for i := 3; i >= 0; i-- {
			fmt.Fprintf(&b, "%d.", a[i])
		}
	} else {
		const hexdigits = "0123456789abcdef"
		a := ip.As16()
		for i := 15; i >= 0; i-- {
			b.WriteByte(hexdigits[a[i]&0xf])
			b.WriteByte('.')
			b.WriteByte(hexdigits[a[i]>>4])
			b.WriteByte('.')
		}
	}
	b.WriteString(strings.TrimSuffix(zone, "."))
	b.WriteByte('.')
	return b.String()
}

// NormalizeRecipient returns the form of an envelope address that
// recipient lists hash: angle brackets and any ESMTP parameters removed,
// surrounding white space trimmed, the whole address lowercased. A quoted
// local part is kept as it is, spaces included. No other rewriting is
// done: +tags and dots stay, as the lists expect.
func NormalizeRecipient(s string) (string, error) {
	t := strings.TrimSpace(s)
	if strings.HasPrefix(t, "<") {
		end := closingBracket(t)
		if end < 0 {
			return "", fmt.Errorf("%w: recipient %q: no closing '>'", ErrBadAddress, clip(s))
		}
		t = t[1:end]
	} else if i := unquotedSpace(t); i >= 0 {
		t = t[:i] // "user@example.com NOTIFY=NEVER"
	}
	t = strings.TrimSpace(t)
	if t == "" {
		return "", fmt.Errorf("%w: empty recipient", ErrBadAddress)
	}
	for _, r := range t {
		if r < 0x20 || r == 0x7f {
			return "", fmt.Errorf("%w: recipient %q: control character", ErrBadAddress, clip(s))
		}
	}
	return strings.ToLower(t), nil
}

// closingBracket returns the index of the '>' that closes the '<' at the
// start of s, skipping quoted strings, or -1.
func closingBracket(s string) int {
	quoted := false
	for i := 1; i < len(s); i++ {
		switch {
		case s[i] == '\\' && quoted:
			i++
		case s[i] == '"':
			quoted = !quoted
		case s[i] == '>' && !quoted:
			return i
		}
	}
	return -1
}

// unquotedSpace returns the index of the first space or tab outside a
// quoted string, or -1.
func unquotedSpace(s string) int {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && quoted:
			i++
		case s[i] == '"':
			quoted = !quoted
		case (s[i] == ' ' || s[i] == '\t') && !quoted:
			return i
		}
	}
	return -1
}

// RecipientHash returns the lowercase hex SHA-1 of a normalised address.
func RecipientHash(normalized string) string {
	sum := sha1.Sum([]byte(normalized))
	return hex.EncodeToString(sum[:])
}

// RecipientQueryName returns the name under which a recipient list with
// the given zone publishes a normalised address.
func RecipientQueryName(normalized, zone string) string {
	return RecipientHash(normalized) + "." + strings.TrimSuffix(zone, ".") + "."
}

// clip shortens attacker-controlled text before it goes into an error.
func clip(s string) string {
	const max = 80
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
