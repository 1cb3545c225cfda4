package zonefile

import (
	"bytes"
	"cmp"
	"errors"
	"net/netip"
	"slices"
)

// prefixSet answers from the longest matching prefix, as rbldnsd's
// ip4trie and ip6trie do. Prefixes are kept per length, each length a
// sorted array; a lookup tries the lengths present from the longest down.
// IPv4 prefixes are kept as IPv4-mapped IPv6 prefixes.
type prefixSet struct {
	levels []prefixLevel // longest first
}

type prefixLevel struct {
	bits    int
	entries []prefixEntry
}

type prefixEntry struct {
	hi, lo uint64
	val    uint32 // 0: an exclusion
}

func (s *prefixSet) lookup(hi, lo uint64, out []uint32) []uint32 {
	for _, l := range s.levels {
		mhi, mlo := mask128(l.bits)
		k := prefixEntry{hi: hi & mhi, lo: lo & mlo}
		i, found := slices.BinarySearchFunc(l.entries, k, comparePrefix)
		if !found {
			continue
		}
		if v := l.entries[i].val; v != 0 {
			out = append(out, v)
		}
		return out
	}
	return out
}

func comparePrefix(x, y prefixEntry) int {
	if c := cmp.Compare(x.hi, y.hi); c != 0 {
		return c
	}
	return cmp.Compare(x.lo, y.lo)
}

// mask128 returns the netmask of a 128-bit prefix length as two halves.
func mask128(bits int) (hi, lo uint64) {
	switch {
	case bits <= 0:
		return 0, 0
	case bits < 64:
		return ^uint64(0) << (64 - bits), 0
	case bits == 64:
		return ^uint64(0), 0
	case bits < 128:
		return ^uint64(0), ^uint64(0) << (128 - bits)
	}
	return ^uint64(0), ^uint64(0)
}

// trieBuilder reads ip4trie, ip6trie and ip6tset lines: CIDR blocks with
// values and exclusions. A prefix given twice keeps its first value, as
// rbldnsd does (with a warning).
type trieBuilder struct {
	v4      bool
	entries map[int][]prefixEntry
}

func (b *trieBuilder) line(p *parser, s []byte) error {
	if s[0] == ':' && (len(s) == 1 || s[1] != ':') {
		return p.defaultLine(s)
	}
	excl := s[0] == '!'
	if excl {
		s = trimLeft(s[1:])
	}
	var (
		pfx  netip.Prefix
		rest []byte
		err  error
	)
	if b.v4 {
		pfx, rest, err = parseIP4CIDR(s)
		if err == nil && uint64(1)<<(128-pfx.Bits()) > p.maxRange {
			return errors.New("covers more addresses than $MAXRANGE4 allows")
		}
	} else {
		pfx, rest, err = parseIP6CIDR(s)
	}
	if err != nil {
		return err
	}
	if len(rest) > 0 && !isSpace(rest[0]) && rest[0] != '#' && rest[0] != ';' && rest[0] != ':' {
		return errAddress
	}
	var val uint32
	if !excl {
		if val, err = p.entryValue(rest); err != nil {
			return err
		}
	}
	if b.entries == nil {
		b.entries = make(map[int][]prefixEntry)
	}
	hi, lo := split128(pfx.Addr().As16())
	b.entries[pfx.Bits()] = append(b.entries[pfx.Bits()], prefixEntry{hi, lo, val})
	return nil
}

func (b *trieBuilder) build(z *Zone) {
	s := &prefixSet{}
	for bits, es := range b.entries {
		slices.SortStableFunc(es, comparePrefix)
		es = slices.CompactFunc(es, func(x, y prefixEntry) bool { return comparePrefix(x, y) == 0 })
		s.levels = append(s.levels, prefixLevel{bits: bits, entries: slices.Clip(es)})
		z.stats.Entries += len(es)
	}
	slices.SortFunc(s.levels, func(x, y prefixLevel) int { return cmp.Compare(y.bits, x.bits) })
	b.entries = nil
	if b.v4 {
		z.trie4 = append(z.trie4, s)
	} else {
		z.trie6 = append(z.trie6, s)
	}
}

// parseIP6CIDR parses an ip6trie entry: an address in full or compressed
// ("::") notation, or 2 to 7 leading groups without "::" (the rest is
// zero), with an optional /bits. Without /bits the length is 128 for an
// address with "::" or 8 groups, else 16 bits per group given; a single
// group needs /bits. A block may not have bits set after its prefix.
func parseIP6CIDR(s []byte) (netip.Prefix, []byte, error) {
	n := 0
	for n < len(s) && (s[n] == ':' || isHex(s[n])) {
		n++
	}
	tok, rest := s[:n], s[n:]
	var (
		addr netip.Addr
		bits int
	)
	if bytes.Contains(tok, []byte("::")) {
		a, err := netip.ParseAddr(string(tok))
		if err != nil || !a.Is6() {
			return netip.Prefix{}, nil, errAddress
		}
		addr, bits = a, 128
	} else {
		var a [16]byte
		groups := bytes.Split(tok, []byte(":"))
		if len(groups) > 8 {
			return netip.Prefix{}, nil, errAddress
		}
		for i, g := range groups {
			if len(g) == 0 || len(g) > 4 {
				return netip.Prefix{}, nil, errAddress
			}
			var v uint16
			for _, c := range g {
				d, _ := hexNibble(c)
				v = v<<4 | uint16(d)
			}
			a[2*i], a[2*i+1] = byte(v>>8), byte(v)
		}
		addr, bits = netip.AddrFrom16(a), 16*len(groups)
	}
	if len(rest) > 0 && rest[0] == '/' {
		var ok bool
		if bits, rest, ok = parseBits(rest[1:], 128); !ok {
			return netip.Prefix{}, nil, errAddress
		}
	} else if bits == 16 {
		return netip.Prefix{}, nil, errors.New("a bare number: write it as a CIDR block (n/16)")
	}
	pfx := netip.PrefixFrom(addr, bits)
	if pfx.Masked().Addr() != addr {
		return netip.Prefix{}, nil, errors.New("bits set after the prefix length")
	}
	return pfx, rest, nil
}

func isHex(c byte) bool {
	_, ok := hexNibble(c)
	return ok
}
