package zonefile

import (
	"bytes"
	"cmp"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
)

// nameSet is a dnset dataset: exact names and wildcards, each a sorted
// array. Names that are one 40-hex label, the SHA-1 keys of recipient
// lists, are kept as 20 bytes rather than as strings.
type nameSet struct {
	hexes []hexEntry
	index prefixIndex // over hexes
	exact []nameEntry
	wild  []nameEntry // "*.example.com" is kept as "example.com"
}

type hexEntry struct {
	key [20]byte
	val uint32
}

type nameEntry struct {
	name string
	val  uint32
}

// nameQuery is a name being looked up, prepared once for every dataset.
type nameQuery struct {
	name  string   // lowercase, without a trailing dot
	key   [20]byte // the name as 20 bytes, when it is one 40-hex label
	isHex bool
}

func newNameQuery(name string) nameQuery {
	name = strings.TrimSuffix(name, ".")
	if key, ok := hexKey(name); ok {
		return nameQuery{key: key, isHex: true}
	}
	return nameQuery{name: strings.ToLower(name)}
}

// lookup answers for q: the exact entries first, then the wildcards of
// the closest parent domain that has any, as rbldnsd's dnset does. An
// exclusion where the answer is found means not listed.
func (s *nameSet) lookup(q *nameQuery, out []uint32) []uint32 {
	if q.isHex {
		// One label: no parent domain for a wildcard to cover.
		if len(s.hexes) == 0 {
			return out
		}
		lo, hi := s.index.bounds(uint16(q.key[0])<<8|uint16(q.key[1]), len(s.hexes))
		i, found := slices.BinarySearchFunc(s.hexes[lo:hi], q.key, func(e hexEntry, k [20]byte) int {
			return bytes.Compare(e.key[:], k[:])
		})
		i += lo
		if !found || s.hexes[i].val == 0 {
			return out
		}
		for ; i < len(s.hexes) && s.hexes[i].key == q.key; i++ {
			out = append(out, s.hexes[i].val)
		}
		return out
	}
	if q.name == "" {
		return out
	}
	if out, found := findName(s.exact, q.name, out); found {
		return out
	}
	for n := q.name; ; {
		dot := strings.IndexByte(n, '.')
		if dot < 0 {
			return out
		}
		n = n[dot+1:]
		if out, found := findName(s.wild, n, out); found {
			return out
		}
	}
}

func findName(entries []nameEntry, name string, out []uint32) ([]uint32, bool) {
	i, found := slices.BinarySearchFunc(entries, name, func(e nameEntry, n string) int {
		return strings.Compare(e.name, n)
	})
	if !found {
		return out, false
	}
	if entries[i].val == 0 {
		return out, true
	}
	for ; i < len(entries) && entries[i].name == name; i++ {
		out = append(out, entries[i].val)
	}
	return out, true
}

// hexKey returns name as 20 bytes when it is one 40-hex label.
func hexKey(name string) ([20]byte, bool) {
	var k [20]byte
	if len(name) != 40 {
		return k, false
	}
	for i := 0; i < 40; i += 2 {
		hi, lo := hexValue[name[i]], hexValue[name[i+1]]
		if hi|lo > 15 {
			return k, false
		}
		k[i/2] = hi<<4 | lo
	}
	return k, true
}

// hexValue maps a hex digit, either case, to its value; other bytes to 255.
var hexValue = func() (t [256]byte) {
	for i := range t {
		t[i] = 255
	}
	for i := range 16 {
		t["0123456789abcdef"[i]] = byte(i)
		t["0123456789ABCDEF"[i]] = byte(i)
	}
	return t
}()

// nameBuilder reads dnset lines.
type nameBuilder struct {
	hexes []hexEntry
	exact []nameEntry
	wild  []nameEntry
}

var errName = errors.New("invalid domain name")

func (b *nameBuilder) line(p *parser, s []byte) error {
	if s[0] == ':' {
		return p.defaultLine(s)
	}
	excl := s[0] == '!'
	if excl {
		s = trimLeft(s[1:])
	}
	// "*.example.com" lists the subdomains; ".example.com" lists them and
	// example.com itself.
	wild, exact := false, true
	switch {
	case len(s) > 0 && s[0] == '.':
		wild, s = true, s[1:]
	case len(s) > 1 && s[0] == '*' && s[1] == '.':
		wild, exact, s = true, false, s[2:]
	}
	end := bytes.IndexAny(s, " \t")
	if end < 0 {
		end = len(s)
	}
	name, key, isHex, err := parseName(s[:end])
	if err != nil {
		return err
	}
	var val uint32
	if !excl {
		if val, err = p.entryValue(s[end:]); err != nil {
			return err
		}
	}
	switch {
	case wild:
		if isHex {
			name = hex.EncodeToString(key[:])
		}
		b.wild = append(b.wild, nameEntry{name, val})
		if exact && isHex {
			b.hexes = append(b.hexes, hexEntry{key, val})
		} else if exact {
			b.exact = append(b.exact, nameEntry{name, val})
		}
	case isHex:
		b.hexes = append(b.hexes, hexEntry{key, val})
	default:
		b.exact = append(b.exact, nameEntry{name, val})
	}
	return nil
}

// parseName checks a domain name and returns it lowercase, without a
// trailing dot; a name that is one 40-hex label is returned as its 20
// bytes instead. The empty name (the zone itself) is refused, as rbldnsd
// refuses it.
func parseName(b []byte) (name string, key [20]byte, isHex bool, err error) {
	b = bytes.TrimSuffix(b, []byte("."))
	if len(b) == 40 {
		if key, isHex = hexKey(string(b)); isHex { // no copy: the compiler sees through it
			return "", key, true, nil
		}
	}
	if len(b) == 0 || len(b) > 253 {
		return "", key, false, errName
	}
	label := 0
	for i, c := range b {
		switch {
		case c == '.':
			if label == 0 {
				return "", key, false, errName
			}
			label = 0
		case c <= ' ' || c >= 0x7f:
			return "", key, false, errName
		default:
			if label++; label > 63 {
				return "", key, false, errName
			}
		}
		if i == len(b)-1 && label == 0 {
			return "", key, false, errName
		}
	}
	return strings.ToLower(string(b)), key, false, nil
}

func (b *nameBuilder) build(z *Zone) {
	s := &nameSet{}
	slices.SortFunc(b.hexes, func(x, y hexEntry) int {
		if c := bytes.Compare(x.key[:], y.key[:]); c != 0 {
			return c
		}
		return cmp.Compare(x.val, y.val)
	})
	s.hexes = slices.Clip(slices.Compact(b.hexes))
	s.index = newPrefixIndex(len(s.hexes), func(i int) uint16 {
		return uint16(s.hexes[i].key[0])<<8 | uint16(s.hexes[i].key[1])
	})
	s.exact = sortNames(b.exact)
	s.wild = sortNames(b.wild)
	*b = nameBuilder{}
	z.names = append(z.names, s)
	z.stats.Entries += len(s.hexes) + len(s.exact) + len(s.wild)
}

func sortNames(es []nameEntry) []nameEntry {
	slices.SortFunc(es, func(x, y nameEntry) int {
		if c := strings.Compare(x.name, y.name); c != 0 {
			return c
		}
		return cmp.Compare(x.val, y.val)
	})
	return slices.Clip(slices.Compact(es))
}
