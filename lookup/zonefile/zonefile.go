// Package zonefile reads blocklist data in rbldnsd's file formats and
// answers queries from memory, the way rbldnsd(8) would answer them.
//
// The formats are those of rbldnsd's datasets: ip4set (IPv4 addresses,
// prefixes, CIDR blocks and ranges), ip4tset (single IPv4 addresses),
// ip4trie (IPv4 CIDR blocks), ip6trie and ip6tset (IPv6 CIDR blocks), dnset
// (domain names and wildcards; recipient lists hold 40-hex SHA-1 labels),
// and combined (several of those in one file, each started by a $DATASET
// line). Abusix's rsync mirror ships its zones in these formats.
//
// Semantics follow rbldnsd(8) and its source:
//
//   - A value is an A record and an optional TXT template: ":127.0.0.4:text".
//     "127.0.0" may be left out of the A record (":4:"). A line that starts
//     with a colon sets the default value for the entries after it; an
//     entry without a value gets the default, which starts as 127.0.0.2.
//     An entry followed by text that does not start with a colon keeps the
//     default A record and takes the text as its TXT template.
//   - An entry that starts with "!" is an exclusion: what it covers is not
//     listed, whatever broader entry covers it too.
//   - ip4set expands every entry to whole octets (/32, /24, /16 or /8) and
//     answers from the most specific level that holds the address: an
//     exclusion there wins, otherwise every value stored there is returned.
//     The tries answer from the longest matching prefix; dnset answers from
//     the exact name, else from the closest wildcard above it.
//   - Lines starting with "#" or ";" are comments. "$SOA", "$NS", "$TTL",
//     "$TIMESTAMP", "$=" and "$n" are accepted and ignored; "$MAXRANGE4"
//     limits the size of IPv4 entries as rbldnsd does.
//   - An invalid line is skipped and reported, as rbldnsd skips it with a
//     warning; Stats tells how many there were, so that a caller can refuse
//     a file that is mostly garbage.
//
// A combined file serves only the datasets attached to the base zone ("@"):
// a list is one zone. Datasets of other types (generic, acl) are skipped.
package zonefile

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
)

// Format names an rbldnsd dataset type, as rbldnsd and the configuration
// spell it.
type Format string

// The formats Parse reads.
const (
	IP4Set   Format = "ip4set"
	IP4TSet  Format = "ip4tset"
	IP4Trie  Format = "ip4trie"
	IP6Trie  Format = "ip6trie"
	IP6TSet  Format = "ip6tset"
	DNSet    Format = "dnset"
	Combined Format = "combined"
)

// Formats lists every format Parse reads.
var Formats = []Format{IP4Set, IP4TSet, IP4Trie, IP6Trie, IP6TSet, DNSet, Combined}

// HoldsIPs reports whether f holds IP addresses (or may, for combined).
func (f Format) HoldsIPs() bool { return f != DNSet }

// HoldsNames reports whether f holds names (or may, for combined).
func (f Format) HoldsNames() bool { return f == DNSet || f == Combined }

// Value is what a listed entry answers: an A record, and the TXT template
// that rbldnsd would expand, or "".
type Value struct {
	A   netip.Addr
	TXT string
}

// defaultValue is rbldnsd's answer for an entry without a value when no
// default line came before it.
var defaultValue = Value{A: netip.AddrFrom4([4]byte{127, 0, 0, 2})}

// Zone is the data of one file, ready to answer queries. It is immutable
// once parsed and safe for concurrent use.
type Zone struct {
	values []Value // index 0 is unused: value 0 marks an exclusion
	ip4    []*ip4Set
	trie4  []*prefixSet
	trie6  []*prefixSet
	names  []*nameSet
	stats  Stats
}

// Stats describes what a parse found.
type Stats struct {
	Entries   int         // entries stored, after ranges are expanded
	DataLines int         // lines that were neither blank, comments nor specials
	Invalid   int         // data lines skipped as invalid
	Warnings  []LineError // the first invalid lines and other oddities
	Skipped   []string    // datasets of a combined file that are not served
}

// maxWarnings bounds Stats.Warnings; Invalid still counts them all.
const maxWarnings = 10

// LineError is a problem with one line of a file.
type LineError struct {
	Line int
	Msg  string
}

// Error returns "line N: MSG".
func (e LineError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// Stats returns what the parse found.
func (z *Zone) Stats() Stats { return z.stats }

// Len returns the number of entries stored.
func (z *Zone) Len() int { return z.stats.Entries }

// ParseFile reads the file at path in format f. A file compressed with
// gzip is read as rbldnsd reads it, decompressed on the fly.
func ParseFile(path string, f Format) (*Zone, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	br := bufio.NewReaderSize(fh, 64<<10)
	var r io.Reader = br
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		defer gz.Close()
		r = gz
	}
	z, err := Parse(r, f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return z, nil
}

// Query answers a query for name, given relative to the zone (without the
// zone and without a trailing dot), as rbldnsd would: four reversed
// decimal labels ask the IPv4 datasets, 32 reversed nibbles the IPv6
// ones, and every name dataset is asked about the name itself. It returns
// nil when nothing is listed. The result must not be modified.
func (z *Zone) Query(name string) []Value {
	var buf [8]uint32
	vals := buf[:0]
	if ip, ok := parseRev4(name); ok {
		vals = z.queryIP4(ip, vals)
	} else if hi, lo, ok := parseRev6(name); ok {
		for _, t := range z.trie6 {
			vals = t.lookup(hi, lo, vals)
		}
	}
	if len(z.names) > 0 {
		q := newNameQuery(name)
		for _, s := range z.names {
			vals = s.lookup(&q, vals)
		}
	}
	return z.collect(vals)
}

// QueryIP answers for an address, IPv4 or IPv6, without a query name.
func (z *Zone) QueryIP(ip netip.Addr) []Value {
	var buf [8]uint32
	vals := buf[:0]
	ip = ip.Unmap()
	if ip.Is4() {
		a := ip.As4()
		vals = z.queryIP4(uint32(a[0])<<24|uint32(a[1])<<16|uint32(a[2])<<8|uint32(a[3]), vals)
	} else {
		hi, lo := split128(ip.As16())
		for _, t := range z.trie6 {
			vals = t.lookup(hi, lo, vals)
		}
	}
	return z.collect(vals)
}

func (z *Zone) queryIP4(ip uint32, vals []uint32) []uint32 {
	for _, s := range z.ip4 {
		vals = s.lookup(ip, vals)
	}
	if len(z.trie4) > 0 {
		hi, lo := mapped4(ip)
		for _, t := range z.trie4 {
			vals = t.lookup(hi, lo, vals)
		}
	}
	return vals
}

// collect turns value indexes into values, dropping repeats. A single
// value is returned from the table itself, without allocating.
func (z *Zone) collect(vals []uint32) []Value {
	switch len(vals) {
	case 0:
		return nil
	case 1:
		return z.values[vals[0] : vals[0]+1 : vals[0]+1]
	}
	out := make([]Value, 0, len(vals))
next:
	for i, v := range vals {
		for _, w := range vals[:i] {
			if v == w {
				continue next
			}
		}
		out = append(out, z.values[v])
	}
	return out
}

// parseRev4 parses four reversed decimal labels ("4.3.2.1" for 1.2.3.4).
func parseRev4(s string) (uint32, bool) {
	var ip uint32
	for i := range 4 {
		n, digits := 0, 0
		for len(s) > 0 && s[0] >= '0' && s[0] <= '9' && digits < 3 {
			n = n*10 + int(s[0]-'0')
			s = s[1:]
			digits++
		}
		if digits == 0 || n > 255 {
			return 0, false
		}
		ip |= uint32(n) << (8 * i)
		if i < 3 {
			if len(s) == 0 || s[0] != '.' {
				return 0, false
			}
			s = s[1:]
		}
	}
	return ip, s == "" || s == "."
}

// parseRev6 parses 32 reversed nibble labels.
func parseRev6(s string) (hi, lo uint64, ok bool) {
	s = strings.TrimSuffix(s, ".")
	if len(s) != 63 {
		return 0, 0, false
	}
	for i := range 32 {
		c := s[2*i]
		if i < 31 && s[2*i+1] != '.' {
			return 0, 0, false
		}
		n, ok := hexNibble(c)
		if !ok {
			return 0, 0, false
		}
		// Label i is nibble 31-i of the address, counted from the left.
		pos := 31 - i
		if pos < 16 {
			hi |= uint64(n) << (4 * (15 - pos))
		} else {
			lo |= uint64(n) << (4 * (31 - pos))
		}
	}
	return hi, lo, true
}

func hexNibble(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func split128(a [16]byte) (hi, lo uint64) {
	for i := range 8 {
		hi = hi<<8 | uint64(a[i])
		lo = lo<<8 | uint64(a[8+i])
	}
	return hi, lo
}

// mapped4 returns ip as the two halves of ::ffff:ip, the form the tries
// keep IPv4 prefixes in.
func mapped4(ip uint32) (hi, lo uint64) { return 0, 0xffff<<32 | uint64(ip) }
