package zonefile

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// ip4Set is an ip4set dataset: entries at four levels, /32, /24, /16 and
// /8, each a sorted array of addresses with a parallel array of value
// indexes, as rbldnsd keeps them. An address is looked up at the most
// specific level first; the first level that holds it decides.
type ip4Set struct {
	addrs [4][]uint32
	vals  [4][]uint32 // 0: an exclusion, which sorts first
	index [4]prefixIndex
}

var ip4Masks = [4]uint32{0xffffffff, 0xffffff00, 0xffff0000, 0xff000000}

func (s *ip4Set) lookup(ip uint32, out []uint32) []uint32 {
	for lvl := range 4 {
		addrs := s.addrs[lvl]
		if len(addrs) == 0 {
			continue
		}
		key := ip & ip4Masks[lvl]
		lo, hi := s.index[lvl].bounds(uint16(key>>16), len(addrs))
		i, found := slices.BinarySearch(addrs[lo:hi], key)
		if !found {
			continue
		}
		i += lo
		vals := s.vals[lvl]
		if vals[i] == 0 {
			return out // excluded at this level
		}
		for ; i < len(addrs) && addrs[i] == key; i++ {
			out = append(out, vals[i])
		}
		return out
	}
	return out
}

type ip4Entry struct{ addr, val uint32 }

// ip4Builder reads ip4set (and ip4tset, single addresses only) lines.
type ip4Builder struct {
	single  bool
	entries [4][]ip4Entry
}

func (b *ip4Builder) line(p *parser, s []byte) error {
	if s[0] == ':' {
		return p.defaultLine(s)
	}
	excl := s[0] == '!'
	if excl {
		s = trimLeft(s[1:])
	}
	first, last, rest, err := parseIP4Range(s)
	if err != nil {
		return err
	}
	if len(rest) > 0 && !isSpace(rest[0]) && rest[0] != '#' && rest[0] != ';' && rest[0] != ':' {
		return errAddress
	}
	if b.single && first != last {
		return errors.New("not a single address, as ip4tset wants")
	}
	if n := uint64(last) - uint64(first) + 1; n > p.maxRange {
		return fmt.Errorf("covers %d addresses, more than $MAXRANGE4 allows", n)
	}
	var val uint32
	if !excl {
		if val, err = p.entryValue(rest); err != nil {
			return err
		}
	}
	expandIP4(first, last, func(lvl int, start, count uint32) {
		step := uint32(1) << (8 * lvl)
		for ; count > 0; count-- {
			b.entries[lvl] = append(b.entries[lvl], ip4Entry{start, val})
			start += step
		}
	})
	return nil
}

// expandIP4 splits the range first..last into whole octets, as rbldnsd's
// ip4range_expand does, calling add for runs of count entries at level
// lvl (0: /32, 1: /24, 2: /16, 3: /8) from start.
func expandIP4(first, last uint32, add func(lvl int, start, count uint32)) {
	a, b := first, last
	for bits := 0; bits < 24; bits += 8 {
		lvl := bits / 8
		if a|255 >= b {
			if b-a == 255 {
				add(lvl+1, a<<bits, 1)
			} else {
				add(lvl, a<<bits, b-a+1)
			}
			return
		}
		if a&255 != 0 {
			add(lvl, a<<bits, 256-a&255)
			a = a>>8 + 1
		} else {
			a >>= 8
		}
		if b&255 != 255 {
			add(lvl, (b&^255)<<bits, b&255+1)
			b = b>>8 - 1
		} else {
			b >>= 8
		}
	}
	add(3, a<<24, b-a+1)
}

func (b *ip4Builder) build(z *Zone) {
	s := &ip4Set{}
	n := 0
	for lvl, es := range b.entries {
		slices.SortFunc(es, func(x, y ip4Entry) int {
			if c := cmp.Compare(x.addr, y.addr); c != 0 {
				return c
			}
			return cmp.Compare(x.val, y.val)
		})
		es = slices.Compact(es)
		s.addrs[lvl] = make([]uint32, len(es))
		s.vals[lvl] = make([]uint32, len(es))
		for i, e := range es {
			s.addrs[lvl][i], s.vals[lvl][i] = e.addr, e.val
		}
		addrs := s.addrs[lvl]
		s.index[lvl] = newPrefixIndex(len(addrs), func(i int) uint16 { return uint16(addrs[i] >> 16) })
		n += len(es)
		b.entries[lvl] = nil
	}
	z.ip4 = append(z.ip4, s)
	z.stats.Entries += n
}

var errAddress = errors.New("invalid address")

// parseIP4Range parses an ip4set entry the way rbldnsd's ip4range does:
// 1 to 4 octets ("127.0.0" is 127.0.0.0/24), optionally with /bits, or a
// range a-b of two prefixes of the same length, the end completed with
// 255s ("127.0.0.1-127.0.0.9"); an end of one octet replaces the start's
// last octet ("127.0.0.1-9", "127.16-31"). A bare number needs /bits, and
// a CIDR block may not have bits set after its prefix.
func parseIP4Range(s []byte) (first, last uint32, rest []byte, err error) {
	a, bits, rest, ok := parseIP4Prefix(s)
	if !ok {
		return 0, 0, nil, errAddress
	}
	if len(rest) > 0 && rest[0] == '-' {
		b, bbits, rest, ok := parseIP4Prefix(rest[1:])
		if !ok {
			return 0, 0, nil, errAddress
		}
		if bbits == 8 { // 127.0.0.1-9: the end's octet replaces the last one
			b = b>>(bits-8) | a&mask4(bits-8)
			bbits = bits
		} else if bbits != bits {
			return 0, 0, nil, errAddress
		}
		b |= ^mask4(bbits)
		if a > b {
			return 0, 0, nil, errors.New("range ends before it starts")
		}
		return a, b, rest, nil
	}
	if len(rest) > 0 && rest[0] == '/' {
		if bits, rest, ok = parseBits(rest[1:], 32); !ok {
			return 0, 0, nil, errAddress
		}
	} else if bits == 8 {
		return 0, 0, nil, errors.New("a bare number: write it as a CIDR block (n/8)")
	}
	if a&^mask4(bits) != 0 {
		return 0, 0, nil, errors.New("bits set after the prefix length")
	}
	return a, a | ^mask4(bits), rest, nil
}

// parseIP4CIDR parses an ip4trie entry: a prefix of 1 to 4 octets with an
// optional /bits (a bare number needs one), as a mapped IPv6 prefix.
func parseIP4CIDR(s []byte) (netip.Prefix, []byte, error) {
	a, bits, rest, ok := parseIP4Prefix(s)
	if !ok {
		return netip.Prefix{}, nil, errAddress
	}
	if len(rest) > 0 && rest[0] == '/' {
		if bits, rest, ok = parseBits(rest[1:], 32); !ok {
			return netip.Prefix{}, nil, errAddress
		}
	} else if bits == 8 {
		return netip.Prefix{}, nil, errors.New("a bare number: write it as a CIDR block (n/8)")
	}
	if a&^mask4(bits) != 0 {
		return netip.Prefix{}, nil, errors.New("bits set after the prefix length")
	}
	addr := netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
	return netip.PrefixFrom(netip.AddrFrom16(addr.As16()), 96+bits), rest, nil
}

// parseIP4Prefix parses 1 to 4 dotted octets, left-aligned, and returns
// the number of bits given (8, 16, 24 or 32).
func parseIP4Prefix(s []byte) (addr uint32, bits int, rest []byte, ok bool) {
	for i := range 4 {
		n, digits := 0, 0
		for digits < len(s) && s[digits] >= '0' && s[digits] <= '9' {
			n = n*10 + int(s[digits]-'0')
			if n > 255 {
				return 0, 0, nil, false
			}
			digits++
		}
		if digits == 0 {
			return 0, 0, nil, false
		}
		addr |= uint32(n) << (24 - 8*i)
		s = s[digits:]
		if i == 3 || len(s) < 2 || s[0] != '.' || s[1] < '0' || s[1] > '9' {
			return addr, 8 * (i + 1), s, true
		}
		s = s[1:]
	}
	panic("unreachable")
}

// parseA parses the A record of a value as rbldnsd's ip4addr does, the
// way inet_aton reads short forms: "4" is 127.0.0.4 (rbldnsd's shortcut),
// "127.4" is 127.0.0.4, "127.1.4" is 127.1.0.4.
func parseA(s []byte) (netip.Addr, []byte, bool) {
	a, bits, rest, ok := parseIP4Prefix(s)
	if !ok {
		return netip.Addr{}, nil, false
	}
	switch bits {
	case 8:
		a >>= 24
	case 16:
		a = a&0xff000000 | a>>16&255
	case 24:
		a = a&0xffff0000 | a>>8&255
	}
	if a == 0 {
		return netip.Addr{}, nil, false
	}
	if bits == 8 {
		a |= 127 << 24
	}
	return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), rest, true
}

// parseBits parses the digits of a prefix length up to max.
func parseBits(s []byte, max int) (int, []byte, bool) {
	n, digits := 0, 0
	for digits < len(s) && s[digits] >= '0' && s[digits] <= '9' {
		n = n*10 + int(s[digits]-'0')
		if n > max {
			return 0, nil, false
		}
		digits++
	}
	return n, s[digits:], digits > 0
}

// mask4 returns the netmask of an IPv4 prefix of the given length.
func mask4(bits int) uint32 {
	if bits <= 0 {
		return 0
	}
	return ^uint32(0) << (32 - bits)
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

func trimLeft(b []byte) []byte {
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	return b
}
