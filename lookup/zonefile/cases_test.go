package zonefile

// queryCase is one query against a testdata file and the A records it
// must answer, "" for NXDOMAIN. The same cases run against Parse in the
// unit tests and against a real rbldnsd in the integration test, so that
// the answers are rbldnsd's and not only what this package believes.
type queryCase struct {
	name string // relative to the zone
	want string // A records, sorted, comma-separated; "" for not listed
	why  string
}

// fileCases are the testdata files and their queries.
var fileCases = []struct {
	file   string
	format Format
	cases  []queryCase
}{
	{"ip4set.zone", IP4Set, []queryCase{
		{"1.2.0.192", "127.0.0.4", "a plain address takes the default line's value"},
		{"2.2.0.192", "127.0.0.5", "a value of its own"},
		{"3.2.0.192", "127.0.0.6", "an A record given by its last octet"},
		{"4.2.0.192", "127.0.0.4", "text alone keeps the default A record"},
		{"5.2.0.192", "127.0.0.4", "a # comment after the entry"},
		{"6.2.0.192", "127.0.0.4", "a ; comment after the entry"},
		{"9.2.0.192", "", "not listed"},
		{"1.100.51.198", "127.0.0.4", "inside a /24"},
		{"7.100.51.198", "", "excluded inside the /24"},
		{"8.100.51.198", "127.0.0.9", "the most specific level answers alone"},
		{"9.113.0.203", "127.0.0.4", "three octets are a /24"},
		{"9.9.9.10", "127.0.0.4", "inside a /8"},
		{"5.5.1.10", "", "excluded /16 inside the /8"},
		{"3.2.1.10", "127.0.0.4", "a /32 inside the excluded /16"},
		{"15.1.168.192", "127.0.0.4", "inside a range"},
		{"21.1.168.192", "", "just after the range"},
		{"1.200.31.169", "127.0.0.4", "a range of /16 prefixes with a one-octet end"},
		{"1.0.32.169", "", "just after it"},
		{"1.1.20.172", "127.0.0.4", "inside a /12"},
		{"5.0.32.172", "127.0.0.4", "a range with a one-octet end"},
		{"10.0.32.172", "", "just after it"},
		{"255.255.127.100", "127.0.0.4", "a /10: 64 /16 entries"},
		{"1.0.128.100", "", "just after the /10"},
		{"1.1.1.6", "127.0.0.4", "n/8"},
		{"200.2.0.192", "127.0.0.10,127.0.0.11", "two values for one address"},
		{"202.2.0.192", "127.255.255.254", "an error code is data like any other"},
		{"4.3.2.1", "", "a CIDR block with bits after its length is skipped"},
		{"1.0.0.5", "", "a bare number is skipped"},
		{"201.2.0.192", "", "an A record of 0 is skipped"},
		{"203.2.0.192", "", "text after an A record needs a colon"},
		{"15.2.168.192", "", "a range that ends before it starts is skipped"},
		{"210.2.0.192", "127.0.0.20", "a later default line"},
		{"1.1.1.11", "", "a /8 over $MAXRANGE4 /16 is skipped"},
		{"1.1.0.12", "127.0.0.20", "a /16 within $MAXRANGE4"},
		{"1.2.0", "", "three labels are no IPv4 query"},
	}},
	{"ip6trie.zone", IP6Trie, []queryCase{
		{rev6("2001:db8:c000::1"), "127.0.1.2", "a /36 from three groups"},
		{rev6("2001:db8:cfff:ffff::1"), "127.0.1.2", "the end of the /36"},
		{rev6("2001:db8:d000::1"), "", "after the /36"},
		{rev6("2001:db8:def7:4242::1"), "127.0.1.3", "four groups: a /64"},
		{rev6("2001:db8:def7:4243::1"), "", "the next /64"},
		{rev6("2001:db8:42::1"), "127.0.1.2", "a /52 in compressed notation"},
		{rev6("2001:db8:42::bead"), "", "an excluded address"},
		{rev6("2001:db8:42::"), "127.0.1.4", "the longest prefix answers"},
		{rev6("::1"), "127.0.1.2", "::1"},
		{rev6("2001:db8:1::5"), "127.0.1.2", "a prefix given twice keeps its first value"},
		{rev6("2001:db8:2::1"), "", "bits after the prefix length: skipped"},
		{rev6("2001:db8:zz::1"), "", "not listed"},
	}},
	{"dnset.zone", DNSet, []queryCase{
		{"63a710569261a24b3766275b7000ce8d7b32e2f7", "127.0.0.2", "a recipient hash"},
		{"63a710569261a24b3766275b7000ce8d7b32e2f8", "127.0.0.3", "upper case in the file"},
		{"63A710569261A24B3766275B7000CE8D7B32E2F7", "127.0.0.2", "upper case in the query"},
		{"63a710569261a24b3766275b7000ce8d7b32e2f9", "", "another hash"},
		{"example.com", "127.0.0.2", "an exact name"},
		{"www.example.com", "", "an exact name lists no subdomain"},
		{"a.wild.example", "127.0.0.2", "a wildcard"},
		{"a.b.wild.example", "127.0.0.2", "a wildcard covers every level"},
		{"wild.example", "", "*. does not list the domain itself"},
		{"x.both.example", "127.0.0.2", "a leading dot lists subdomains"},
		{"both.example", "127.0.0.2", "... and the domain itself"},
		{"no.wild.example", "", "an excluded exact name"},
		{"x.no.wild.example", "127.0.0.2", "an exact exclusion does not cover subdomains"},
		{"exact.wild.example", "127.0.0.5", "an exact name wins over a wildcard"},
		{"mixed.case.example", "127.0.0.2", "names are compared in lower case"},
		{"a.quiet.wild.example", "", "an excluded wildcard"},
		{"quiet.wild.example", "127.0.0.2", "the excluded wildcard's domain itself"},
	}},
	{"combined.zone", Combined, []queryCase{
		{"2.0.0.127", "127.0.0.4", "a short A record in a combined file"},
		{"66.2.0.192", "127.0.0.4,127.0.0.5", "two datasets of the base zone answer"},
		{"77.2.0.192", "", "a dataset in a subzone only"},
		{rev6("2001:db8::66"), "127.0.0.4", "the IPv6 dataset"},
		{"63a710569261a24b3766275b7000ce8d7b32e2f7", "127.0.0.2", "the recipient dataset"},
		{"1.1.1.1", "", "not listed"},
	}},
}

// rev6 returns the reversed nibble labels of an IPv6 address, or the
// input itself when it is none.
func rev6(s string) string {
	const hexdigits = "0123456789abcdef"
	a, err := parseAddr6(s)
	if err != nil {
		return s
	}
	var b []byte
	for i := 15; i >= 0; i-- {
		b = append(b, hexdigits[a[i]&0xf], '.', hexdigits[a[i]>>4], '.')
	}
	return string(b[:len(b)-1])
}
