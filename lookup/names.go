package lookup

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
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
	zone = strings.TrimSuffix(zone, ".")
	var b []byte
	if ip.Is4() {
		b = make([]byte, 0, 16+len(zone)+1)
		a := ip.As4()
		for i := 3; i >= 0; i-- {
			b = strconv.AppendUint(b, uint64(a[i]), 10)
			b = append(b, '.')
		}
	} else {
		const hexdigits = "0123456789abcdef"
		b = make([]byte, 0, 64+len(zone)+1)
		a := ip.As16()
		for i := 15; i >= 0; i-- {
			b = append(b, hexdigits[a[i]&0xf], '.', hexdigits[a[i]>>4], '.')
		}
	}
	b = append(b, zone...)
	b = append(b, '.')
	return string(b)
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
	for _, r := range t {
		if unicode.IsControl(r) {
			return "", fmt.Errorf("%w: recipient %q: control character", ErrBadAddress, clip(s))
		}
	}
	t = strings.TrimSpace(t)
	switch {
	case t == "":
		return "", fmt.Errorf("%w: empty recipient", ErrBadAddress)
	case unquotedSpace(t) >= 0 || unquotedBracket(t):
		return "", fmt.Errorf("%w: recipient %q: space or bracket outside quotes",
			ErrBadAddress, clip(s))
	}
	return lower(t), nil
}

// lower lowercases an address. Bytes that are not UTF-8 (8-bit addresses
// from old clients) are kept, lowering only ASCII, so that two different
// addresses never become the same one.
func lower(s string) string {
	if utf8.ValidString(s) {
		return strings.ToLower(s)
	}
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

// unquotedBracket reports an angle bracket outside a quoted string.
func unquotedBracket(s string) bool {
	return indexUnquoted(s, 0, func(c byte) bool { return c == '<' || c == '>' }) >= 0
}

// closingBracket returns the index of the '>' that closes the '<' at the
// start of s, skipping quoted strings, or -1.
func closingBracket(s string) int {
	return indexUnquoted(s, 1, func(c byte) bool { return c == '>' })
}

// unquotedSpace returns the index of the first space or tab outside a
// quoted string, or -1.
func unquotedSpace(s string) int {
	return indexUnquoted(s, 0, func(c byte) bool { return c == ' ' || c == '\t' })
}

// indexUnquoted returns the index of the first byte from start on that is
// outside a quoted string (with backslash escapes inside it) and matches,
// or -1.
func indexUnquoted(s string, start int, match func(byte) bool) int {
	quoted := false
	for i := start; i < len(s); i++ {
		switch {
		case s[i] == '\\' && quoted:
			i++
		case s[i] == '"':
			quoted = !quoted
		case !quoted && match(s[i]):
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
