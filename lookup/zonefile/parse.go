package zonefile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// maxLine is the longest line read; a longer one is skipped as invalid.
// rbldnsd truncates at 512 bytes; TXT templates are at most 255.
const maxLine = 4096

// builder collects the entries of one dataset while its lines are read.
type builder interface {
	// line parses one data line, trimmed and not empty. An error is a
	// problem with that line only.
	line(p *parser, b []byte) error
	// build sorts the entries and adds the dataset to z.
	build(z *Zone)
}

// parser reads one file.
type parser struct {
	format Format
	z      *Zone
	index  map[Value]uint32 // value -> index in z.values
	lineno int

	cur      builder // the dataset being read; nil before a $DATASET
	served   bool    // cur is attached to the base zone
	def      Value   // the default value of cur
	defIndex uint32  // its index in the value table
	maxRange uint64  // $MAXRANGE4 of cur: most IPv4 addresses an entry may cover
}

// Parse reads data in format f. Invalid lines are skipped and counted
// (see Stats); the error is for input that cannot be read at all, or a
// combined file that does not follow rbldnsd's structure.
func Parse(r io.Reader, f Format) (*Zone, error) {
	p := &parser{
		format: f,
		z:      &Zone{values: []Value{{}}},
		index:  make(map[Value]uint32),
	}
	if f != Combined {
		b, err := newBuilder(f)
		if err != nil {
			return nil, err
		}
		p.start(b, true)
	}

	br := bufio.NewReaderSize(r, maxLine)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			p.lineno++
			p.warn("line longer than %d bytes", maxLine)
			p.z.stats.DataLines++
			p.z.stats.Invalid++
			if err = skipLine(br); err != nil && err != io.EOF {
				return nil, err
			}
			continue
		}
		if len(line) > 0 {
			p.lineno++
			if ferr := p.line(line); ferr != nil {
				return nil, ferr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	p.finish()
	return p.z, nil
}

func skipLine(br *bufio.Reader) error {
	for {
		_, err := br.ReadSlice('\n')
		if !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
	}
}

func newBuilder(f Format) (builder, error) {
	switch f {
	case IP4Set:
		return &ip4Builder{}, nil
	case IP4TSet:
		return &ip4Builder{single: true}, nil
	case IP4Trie:
		return &trieBuilder{v4: true}, nil
	case IP6Trie, IP6TSet:
		return &trieBuilder{}, nil
	case DNSet:
		return &nameBuilder{}, nil
	}
	return nil, fmt.Errorf("unknown format %q", f)
}

// start begins a dataset; served tells whether its answers are used.
func (p *parser) start(b builder, served bool) {
	p.finishDataset()
	p.cur, p.served = b, served
	p.def, p.defIndex = defaultValue, p.valueIndex(defaultValue)
	p.maxRange = 1 << 32
}

func (p *parser) finishDataset() {
	if p.cur != nil && p.served {
		p.cur.build(p.z)
	}
	p.cur = nil
}

func (p *parser) finish() {
	p.finishDataset()
	p.index = nil
}

// line handles one line as rbldnsd's readdslines does: white space
// trimmed, specials ($X, #$X, :$X) recognised anywhere, comments skipped.
func (p *parser) line(b []byte) error {
	b = bytes.Trim(b, " \t\r\n")
	switch {
	case len(b) == 0:
		return nil
	case b[0] == '$':
		return p.special(b[1:])
	case (b[0] == '#' || b[0] == ':') && len(b) > 1 && b[1] == '$':
		return p.special(b[2:])
	case b[0] == '#' || b[0] == ';':
		return nil
	}
	p.z.stats.DataLines++
	if p.cur == nil {
		// rbldnsd refuses the whole file, not just the line.
		return fmt.Errorf("line %d: data before the first $DATASET line of a combined file",
			p.lineno)
	}
	if err := p.cur.line(p, b); err != nil {
		p.z.stats.Invalid++
		p.warn("%v: %s", err, clip(b))
	}
	return nil
}

// special handles a $ line. Only $DATASET and $MAXRANGE4 change what is
// served; the others describe DNS records that a list lookup never needs.
func (p *parser) special(b []byte) error {
	word, rest, _ := bytes.Cut(b, []byte(" "))
	if i := bytes.IndexByte(word, '\t'); i >= 0 {
		word, rest = b[:i], b[i+1:]
	}
	rest = bytes.TrimLeft(rest, " \t")
	switch w := strings.ToUpper(string(word)); {
	case w == "DATASET":
		if p.format != Combined {
			p.warn("$DATASET outside a combined file, ignored")
			return nil
		}
		return p.dataset(rest)
	case w == "MAXRANGE4":
		n, err := parseMaxRange(rest)
		if err != nil {
			p.warn("$MAXRANGE4: %v", err)
		} else if n < p.maxRange {
			p.maxRange = n // may shrink, never grow
		}
	case w == "SOA", w == "NS", w == "TTL", w == "TIMESTAMP", w == "=":
		// TODO: $TIMESTAMP's expiry is not enforced: rbldnsd stops
		// serving expired data, this serves it until the file changes.
	case len(w) == 1 && w[0] >= '0' && w[0] <= '9':
		// $n: a substitution variable for TXT templates.
	default:
		p.warn("unrecognized special $%s, ignored", clip(word))
	}
	return nil
}

// dataset starts a dataset of a combined file: "$DATASET type[:name]
// subzone...". Only datasets attached to the base zone "@" are served.
func (p *parser) dataset(b []byte) error {
	for i := range b {
		if (b[i] == '#' || b[i] == ';') && (i == 0 || b[i-1] == ' ' || b[i-1] == '\t') {
			b = b[:i]
			break
		}
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return fmt.Errorf("line %d: $DATASET without a type", p.lineno)
	}
	typ, _, _ := strings.Cut(fields[0], ":")
	served := false
	var others []string
	for _, z := range fields[1:] {
		if z == "@" {
			served = true
		} else {
			others = append(others, z)
		}
	}
	if len(fields) == 1 {
		p.warn("$DATASET %s names no subzone; its data is ignored", fields[0])
	}
	if len(others) > 0 {
		p.z.stats.Skipped = append(p.z.stats.Skipped,
			fmt.Sprintf("line %d: %s in subzone %s", p.lineno, fields[0],
				strings.Join(others, " ")))
	}

	switch Format(typ) {
	case Combined:
		return fmt.Errorf("line %d: a combined dataset cannot hold another", p.lineno)
	case IP4Set, IP4TSet, IP4Trie, IP6Trie, IP6TSet, DNSet:
		b, _ := newBuilder(Format(typ))
		if !served {
			b = skipBuilder{}
		}
		p.start(b, served)
	case "generic", "acl", "ip4vset", "dnvset", "dnhash":
		if served {
			p.z.stats.Skipped = append(p.z.stats.Skipped,
				fmt.Sprintf("line %d: %s (type not read)", p.lineno, fields[0]))
		}
		p.start(skipBuilder{}, false)
	default:
		return fmt.Errorf("line %d: unknown dataset type %s", p.lineno, clip([]byte(typ)))
	}
	return nil
}

// skipBuilder ignores the lines of a dataset that is not served.
type skipBuilder struct{}

func (skipBuilder) line(*parser, []byte) error { return nil }
func (skipBuilder) build(*Zone)                {}

func (p *parser) warn(format string, args ...any) {
	if len(p.z.stats.Warnings) < maxWarnings {
		p.z.stats.Warnings = append(p.z.stats.Warnings,
			LineError{Line: p.lineno, Msg: fmt.Sprintf(format, args...)})
	}
}

// valueIndex returns the index of v in the zone's value table.
func (p *parser) valueIndex(v Value) uint32 {
	if i, ok := p.index[v]; ok {
		return i
	}
	i := uint32(len(p.z.values))
	p.z.values = append(p.z.values, v)
	p.index[v] = i
	return i
}

// entryValue parses what follows an entry: nothing or a comment (the
// default value), ":A:TXT", ":A" or a TXT template alone.
func (p *parser) entryValue(b []byte) (uint32, error) {
	b = bytes.TrimLeft(b, " \t")
	if len(b) == 0 || b[0] == '#' || b[0] == ';' {
		return p.defIndex, nil
	}
	v, err := parseValue(b, p.def)
	if err != nil {
		return 0, err
	}
	return p.valueIndex(v), nil
}

// defaultLine handles a line starting with ':' (not '::'): the default
// value for the entries after it.
func (p *parser) defaultLine(b []byte) error {
	v, err := parseValue(b, p.def)
	if err != nil {
		return err
	}
	p.def, p.defIndex = v, p.valueIndex(v)
	return nil
}

var errValue = errors.New("invalid value")

// parseValue parses rbldnsd's "A and TXT" syntax. After a colon comes the
// A record, in full or as its last octet(s) under 127.0.0.0 the way
// inet_aton reads them ("4" is 127.0.0.4); a second colon starts the TXT
// template. Without the second colon the default TXT stays; with it and
// nothing after, there is no TXT. Text without a leading colon is a TXT
// template with the default A record.
func parseValue(b []byte, def Value) (Value, error) {
	if b[0] != ':' {
		return Value{A: def.A, TXT: txt(b)}, nil
	}
	a, rest, ok := parseA(b[1:])
	if !ok {
		return Value{}, errValue
	}
	v := Value{A: a, TXT: def.TXT}
	rest = bytes.TrimLeft(rest, " \t")
	switch {
	case len(rest) == 0 || rest[0] == '#':
	case rest[0] == ':':
		v.TXT = ""
		if rest = bytes.TrimLeft(rest[1:], " \t"); len(rest) > 0 && rest[0] != '#' {
			v.TXT = txt(rest)
		}
	default:
		return Value{}, errValue
	}
	return v, nil
}

// txt keeps a TXT template as rbldnsd does: at most 255 bytes.
func txt(b []byte) string {
	if len(b) > 255 {
		b = b[:255]
	}
	return string(b)
}

func parseMaxRange(b []byte) (uint64, error) {
	s := strings.TrimSpace(string(b))
	if bits, ok := strings.CutPrefix(s, "/"); ok {
		n, err := strconv.Atoi(bits)
		if err != nil || n < 0 || n > 32 {
			return 0, fmt.Errorf("want /0 to /32 or a number of addresses, got %q", s)
		}
		return 1 << (32 - n), nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("want /0 to /32 or a number of addresses, got %q", s)
	}
	return n, nil
}

// clip shortens a line for a message.
func clip(b []byte) string {
	const max = 60
	s := strconv.Quote(string(b))
	if len(b) > max {
		s = strconv.Quote(string(b[:max])) + "..."
	}
	return s
}
