package zonefile

import (
	"bytes"
	"compress/gzip"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func parseString(t *testing.T, text string, f Format) *Zone {
	t.Helper()
	z, err := Parse(strings.NewReader(text), f)
	if err != nil {
		t.Fatal(err)
	}
	return z
}

// TestFileCases answers the testdata cases, which the integration test
// checks against rbldnsd itself.
func TestFileCases(t *testing.T) {
	for _, fc := range fileCases {
		t.Run(fc.file, func(t *testing.T) {
			z, err := ParseFile(filepath.Join("testdata", fc.file), fc.format)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range fc.cases {
				if got := answer(z.Query(c.name)); got != c.want {
					t.Errorf("Query(%s) = %q, want %q (%s)", c.name, got, c.want, c.why)
				}
			}
		})
	}
}

func TestFileStats(t *testing.T) {
	tests := []struct {
		file            string
		format          Format
		entries         int
		invalid         int
		firstBadLine    int
		skippedDatasets int
	}{
		// 33 /32s, 2 /24s, 84 /16s, 2 /8s, as rbldnsd counts them;
		// 11.0.0.0/8 is over $MAXRANGE4.
		{"ip4set.zone", IP4Set, 33 + 2 + 84 + 2, 8, 32, 0},
		{"ip6trie.zone", IP6Trie, 7, 4, 16, 0},
		// rbldnsd counts 8/3: it takes "bad..name", which this refuses.
		{"dnset.zone", DNSet, 7 + 3, 2, 14, 0},
		// 2 + 1 + 1 + 1: the proxy dataset's subzone is not served.
		{"combined.zone", Combined, 5, 0, 0, 3},
		{"garbage.zone", IP4Set, 1, 3, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			z, err := ParseFile(filepath.Join("testdata", tt.file), tt.format)
			if err != nil {
				t.Fatal(err)
			}
			st := z.Stats()
			if st.Entries != tt.entries || z.Len() != tt.entries {
				t.Errorf("entries %d, want %d", st.Entries, tt.entries)
			}
			if st.Invalid != tt.invalid {
				t.Errorf("invalid lines %d, want %d: %v", st.Invalid, tt.invalid, st.Warnings)
			}
			if tt.invalid > 0 && (len(st.Warnings) == 0 || st.Warnings[0].Line != tt.firstBadLine) {
				t.Errorf("warnings %v, want the first on line %d", st.Warnings, tt.firstBadLine)
			}
			if len(st.Skipped) != tt.skippedDatasets {
				t.Errorf("skipped %q, want %d datasets", st.Skipped, tt.skippedDatasets)
			}
		})
	}
}

func TestIP4Entries(t *testing.T) {
	tests := []struct {
		entry       string
		first, last string // "" for an invalid entry
	}{
		{"192.0.2.1", "192.0.2.1", "192.0.2.1"},
		{"192.0.2", "192.0.2.0", "192.0.2.255"},
		{"192.0", "192.0.0.0", "192.0.255.255"},
		{"192/8", "192.0.0.0", "192.255.255.255"},
		{"127.16/12", "127.16.0.0", "127.31.255.255"},
		{"127.0.0.0/24", "127.0.0.0", "127.0.0.255"},
		{"0/0", "0.0.0.0", "255.255.255.255"},
		{"127.0.0.1-255", "127.0.0.1", "127.0.0.255"},
		{"127.16-31", "127.16.0.0", "127.31.255.255"},
		{"127.16.0-127.31.255", "127.16.0.0", "127.31.255.255"},
		{"127.0.0.0-127.0.0.255", "127.0.0.0", "127.0.0.255"},
		{"10-20", "10.0.0.0", "20.255.255.255"},
		{"1.2.3.4/32", "1.2.3.4", "1.2.3.4"},
		{"001.002.003.004", "1.2.3.4", "1.2.3.4"},
		{"192", "", ""},                     // a bare number
		{"1.2-1.2.3.4", "", ""},             // ends of different lengths
		{"1.2.3.4/33", "", ""},              // too long
		{"1.2.3.4/24", "", ""},              // bits after the length
		{"1.2.3.9-1.2.3.8", "", ""},         // backwards
		{"256.1.1.1", "", ""},               // not an octet
		{"1.2.3.4.5", "1.2.3.4", "1.2.3.4"}, // the caller refuses the rest
		{"", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.entry, func(t *testing.T) {
			first, last, _, err := parseIP4Range([]byte(tt.entry))
			if tt.first == "" {
				if err == nil {
					t.Fatalf("got %s-%s, want an error", u32(first), u32(last))
				}
				return
			}
			if err != nil || u32(first) != tt.first || u32(last) != tt.last {
				t.Fatalf("got %s-%s, %v; want %s-%s", u32(first), u32(last), err, tt.first, tt.last)
			}
		})
	}
}

func u32(a uint32) string {
	return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}).String()
}

func TestExpandIP4(t *testing.T) {
	tests := []struct {
		first, last string
		levels      [4]int // entries at /32, /24, /16, /8
	}{
		{"1.2.3.4", "1.2.3.4", [4]int{1, 0, 0, 0}},
		{"1.2.3.0", "1.2.3.255", [4]int{0, 1, 0, 0}},
		{"1.2.3.1", "1.2.3.255", [4]int{255, 0, 0, 0}},
		{"1.2.3.250", "1.2.5.5", [4]int{6 + 6, 1, 0, 0}},
		{"10.0.0.0", "10.255.255.255", [4]int{0, 0, 0, 1}},
		{"0.0.0.0", "255.255.255.255", [4]int{0, 0, 0, 256}},
		{"100.64.0.0", "100.127.255.255", [4]int{0, 0, 64, 0}},
	}
	for _, tt := range tests {
		var got [4]int
		a, b := netip.MustParseAddr(tt.first).As4(), netip.MustParseAddr(tt.last).As4()
		expandIP4(be(a), be(b), func(lvl int, _, count uint32) { got[lvl] += int(count) })
		if got != tt.levels {
			t.Errorf("%s-%s: entries %v, want %v", tt.first, tt.last, got, tt.levels)
		}
	}
}

func be(a [4]byte) uint32 {
	return uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
}

func TestIP6Entries(t *testing.T) {
	tests := []struct{ entry, want string }{
		{"2001:db8::1", "2001:db8::1/128"},
		{"2001:db8::/32", "2001:db8::/32"},
		{"2001:db8", "2001:db8::/32"},
		{"2001:db8:c000/36", "2001:db8:c000::/36"},
		{"2001:db8:1:2", "2001:db8:1:2::/64"},
		{"1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8/128"},
		{"::", "::/128"},
		{"::/0", "::/0"},
		{"2001/16", "2001::/16"},
		{"2001", ""},           // a bare number
		{"2001:db8::1/64", ""}, // bits after the length
		{"2001:db8:", ""},      // a trailing colon
		{"1:2:3:4:5:6:7:8:9", ""},
		{"12345::1", ""},
		{"::ffff:1.2.3.4", ""}, // no dotted quads
		{"/64", ""},
	}
	for _, tt := range tests {
		t.Run(tt.entry, func(t *testing.T) {
			pfx, rest, err := parseIP6CIDR([]byte(tt.entry))
			if err == nil && len(rest) > 0 {
				err = errAddress // the caller refuses what is left
			}
			if tt.want == "" {
				if err == nil {
					t.Fatalf("got %v, want an error", pfx)
				}
				return
			}
			if err != nil || pfx.String() != tt.want {
				t.Fatalf("got %v, %v; want %s", pfx, err, tt.want)
			}
		})
	}
}

func TestValues(t *testing.T) {
	def := Value{A: netip.MustParseAddr("127.0.0.4"), TXT: "default text"}
	tests := []struct {
		in      string
		a, txt  string
		invalid bool
	}{
		{":127.0.0.5:listed", "127.0.0.5", "listed", false},
		{":5:listed", "127.0.0.5", "listed", false},
		{":127.5:x", "127.0.0.5", "x", false},
		{":127.1.5:x", "127.1.0.5", "x", false},
		{":127.0.0.5", "127.0.0.5", "default text", false},
		{":127.0.0.5:", "127.0.0.5", "", false},
		{":127.0.0.5 # comment", "127.0.0.5", "default text", false},
		{": 127.0.0.5 : spaced", "", "", true},
		{":127.0.0.5 : spaced", "127.0.0.5", "spaced", false},
		{"just text $", "127.0.0.4", "just text $", false},
		{":0:", "", "", true},
		{":x:", "", "", true},
		{":127.0.0.5 text", "", "", true},
		{":" + strings.Repeat("1", 4), "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			v, err := parseValue([]byte(tt.in), def)
			if tt.invalid {
				if err == nil {
					t.Fatalf("got %+v, want an error", v)
				}
				return
			}
			if err != nil || v.A.String() != tt.a || v.TXT != tt.txt {
				t.Fatalf("got %+v, %v; want %s %q", v, err, tt.a, tt.txt)
			}
		})
	}
	if v, _ := parseValue([]byte(":2:"+strings.Repeat("x", 300)), def); len(v.TXT) != 255 {
		t.Errorf("TXT of %d bytes, want it cut at 255", len(v.TXT))
	}
}

func TestDefaultValueWithoutDefaultLine(t *testing.T) {
	z := parseString(t, "192.0.2.1\n", IP4Set)
	got := z.Query("1.2.0.192")
	if len(got) != 1 || got[0].A.String() != "127.0.0.2" || got[0].TXT != "" {
		t.Fatalf("got %+v, want rbldnsd's default 127.0.0.2 without TXT", got)
	}
}

func TestCombinedStructure(t *testing.T) {
	tests := []struct {
		name, text string
		err        string // part of the error; "" for none
	}{
		{"data before $DATASET", "192.0.2.1\n$DATASET ip4set @\n", "before the first $DATASET"},
		{"specials before $DATASET", "$SOA 0 a. b. 0 1 1 1 1\n$TTL 60\n# c\n$DATASET ip4set @\n1.2.3.4\n", ""},
		{"unknown type", "$DATASET ip5set @\n", `unknown dataset type "ip5set"`},
		{"nested", "$DATASET combined @\n", "cannot hold another"},
		{"no type", "$DATASET\n", "without a type"},
		{"hash comment on $DATASET", "#$DATASET ip4set @\n1.2.3.4\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(strings.NewReader(tt.text), Combined)
			if tt.err == "" && err != nil {
				t.Fatal(err)
			}
			if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("error %v, want one containing %q", err, tt.err)
			}
		})
	}
}

func TestDatasetOutsideCombinedIsIgnored(t *testing.T) {
	z := parseString(t, "$DATASET dnset @\n192.0.2.1\n", IP4Set)
	if z.Len() != 1 || len(z.Stats().Warnings) != 1 {
		t.Fatalf("entries %d, warnings %v", z.Len(), z.Stats().Warnings)
	}
}

func TestLongLineIsSkipped(t *testing.T) {
	text := "192.0.2.1\n192.0.2.2 " + strings.Repeat("x", 3*maxLine) + "\n192.0.2.3\n"
	z := parseString(t, text, IP4Set)
	st := z.Stats()
	if st.Entries != 2 || st.Invalid != 1 || st.Warnings[0].Line != 2 {
		t.Fatalf("stats %+v", st)
	}
	if z.Query("3.2.0.192") == nil {
		t.Fatal("the line after the long one was lost")
	}
}

func TestCRLFAndNoFinalNewline(t *testing.T) {
	z := parseString(t, ":127.0.0.4:x\r\n192.0.2.1\r\n192.0.2.2", IP4Set)
	if answer(z.Query("1.2.0.192")) != "127.0.0.4" || answer(z.Query("2.2.0.192")) != "127.0.0.4" {
		t.Fatalf("stats %+v", z.Stats())
	}
}

func TestGzip(t *testing.T) {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	gz.Write([]byte(":127.0.0.4:\n192.0.2.1\n"))
	gz.Close()
	path := filepath.Join(t.TempDir(), "list.zone.gz")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	z, err := ParseFile(path, IP4Set)
	if err != nil {
		t.Fatal(err)
	}
	if answer(z.Query("1.2.0.192")) != "127.0.0.4" {
		t.Fatal("not listed")
	}

	// A truncated archive is an error, not a shorter list.
	if err := os.WriteFile(path, buf.Bytes()[:buf.Len()-10], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseFile(path, IP4Set); err == nil {
		t.Fatal("a truncated gzip file parsed without an error")
	}
}

func TestParseFileMissing(t *testing.T) {
	if _, err := ParseFile(filepath.Join(t.TempDir(), "none"), IP4Set); !os.IsNotExist(err) {
		t.Fatalf("error %v, want not-exist", err)
	}
}

func TestQueryIP(t *testing.T) {
	z, err := ParseFile("testdata/combined.zone", Combined)
	if err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]string{
		"192.0.2.66":        "127.0.0.4,127.0.0.5",
		"::ffff:192.0.2.66": "127.0.0.4,127.0.0.5",
		"2001:db8::66":      "127.0.0.4",
		"2001:db8::67":      "",
		"198.51.100.1":      "",
	} {
		if got := answer(z.QueryIP(netip.MustParseAddr(ip))); got != want {
			t.Errorf("QueryIP(%s) = %q, want %q", ip, got, want)
		}
	}
}

func TestIP4TrieAndTSet(t *testing.T) {
	trie := parseString(t, ":127.0.0.4:\n10.0.0.0/9\n10.0.0.0/12 :127.0.0.5:\n!10.1.2.3\n10.1.2 :6:\n", IP4Trie)
	for name, want := range map[string]string{
		"1.0.100.10": "127.0.0.4", // only the /9
		"1.0.1.10":   "127.0.0.5", // the longest prefix, not both
		"3.2.1.10":   "",          // excluded
		"4.2.1.10":   "127.0.0.6", // a /24 from three octets
		"1.0.0.11":   "",
	} {
		if got := answer(trie.Query(name)); got != want {
			t.Errorf("ip4trie %s = %q, want %q", name, got, want)
		}
	}

	tset := parseString(t, "192.0.2.1\n192.0.2.0/24\n", IP4TSet)
	if tset.Len() != 1 || tset.Stats().Invalid != 1 {
		t.Errorf("ip4tset: stats %+v, want the /24 refused", tset.Stats())
	}

	ip6t := parseString(t, "2001:db8:1:2\n!2001:db8:1:2::5\n", IP6TSet)
	if answer(ip6t.Query(rev6("2001:db8:1:2::4"))) != "127.0.0.2" ||
		ip6t.Query(rev6("2001:db8:1:2::5")) != nil {
		t.Errorf("ip6tset answers wrong")
	}
}

func TestQueryNames(t *testing.T) {
	z := parseString(t, "1.2.0.192\n", DNSet)
	for _, name := range []string{"1.2.0.192", "1.2.0.192."} {
		if z.Query(name) == nil {
			t.Errorf("a dnset entry of digits is a name like any other: %s", name)
		}
	}
	for _, name := range []string{"", ".", "1.2.0"} {
		if z.Query(name) != nil {
			t.Errorf("Query(%q) listed", name)
		}
	}
}

func TestParseRev(t *testing.T) {
	if ip, ok := parseRev4("4.3.2.1"); !ok || u32(ip) != "1.2.3.4" {
		t.Errorf("parseRev4 = %s, %v", u32(ip), ok)
	}
	for _, bad := range []string{"4.3.2", "4.3.2.1.0", "256.3.2.1", "a.3.2.1", "4..2.1", "1000.3.2.1"} {
		if _, ok := parseRev4(bad); ok {
			t.Errorf("parseRev4(%q) accepted", bad)
		}
	}
	name := rev6("2001:db8::1")
	hi, lo, ok := parseRev6(name)
	want := netip.MustParseAddr("2001:db8::1").As16()
	whi, wlo := split128(want)
	if !ok || hi != whi || lo != wlo {
		t.Errorf("parseRev6(%s) = %x %x %v", name, hi, lo, ok)
	}
	if _, _, ok := parseRev6(strings.Replace(name, "1.", "g.", 1)); ok {
		t.Error("parseRev6 accepted a non-hex label")
	}
}

// TestValuesShared checks that a single answer does not allocate and that
// values are stored once.
func TestValuesShared(t *testing.T) {
	var b strings.Builder
	b.WriteString(":127.0.0.4:listed\n")
	for i := range 1000 {
		b.WriteString(u32(0x0a000000+uint32(i)) + "\n")
	}
	z := parseString(t, b.String(), IP4Set)
	// The table holds the unused slot 0, rbldnsd's default and the one
	// value of the file.
	if len(z.values) != 3 {
		t.Errorf("%d values stored for a file of one distinct value", len(z.values))
	}
	if n := testing.AllocsPerRun(100, func() { z.Query("5.0.0.10") }); n != 0 {
		t.Errorf("a listed query allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { z.Query("5.0.0.11") }); n != 0 {
		t.Errorf("a clean query allocates %v times", n)
	}
}
