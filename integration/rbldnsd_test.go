//go:build integration

package integration

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// The test lists. The IP list works like Abusix authbl: listed only with
// 127.0.0.4, test point 127.0.0.2. The recipient list works like
// authbl-rcpt: the query label is the hex SHA-1 of the lowercased address.
const (
	ipZone   = "authbl.test"
	rcptZone = "authbl-rcpt.test"
	// listedCode is what both lists answer for a listed item.
	listedCode = "127.0.0.4"
)

// Addresses the IP list lists; the tests use no other listed ones.
var (
	// listedLoopback is a loopback address the client really connects
	// from (Linux lets a socket bind any 127/8 address).
	listedLoopback = "127.0.0.5"
	// listedXCLIENT is set through XCLIENT ADDR only: no packet goes to
	// or comes from it.
	listedXCLIENT = "198.51.100.7"
	listedIPv6    = "2001:db8::5"
	// listedIPv6Net is a listed /48; its members are listed too.
	listedIPv6Net = "2001:db8:bad::/48"
	// oddAnswer gets 127.255.255.254 from the IP list: an error code of
	// the kind Spamhaus uses, never a listing.
	oddAnswer = "198.51.100.254"
)

// dropbox is the listed recipient; tests write it in mixed case too.
const dropbox = "dropbox@evil.example"

// ip4Zone is the IPv4 part of the IP list (rbldnsd ip4set).
var ip4Zone = `# authbl test list, IPv4
:` + listedCode + `:listed in the test authbl, see http://authbl.test/$
127.0.0.2
` + listedLoopback + `
` + listedXCLIENT + `
` + oddAnswer + ` :127.255.255.254:query refused
`

// ip6Zone is the IPv6 part of the IP list (rbldnsd ip6trie).
var ip6Zone = `# authbl test list, IPv6
:` + listedCode + `:listed in the test authbl (IPv6)
` + listedIPv6 + `
` + listedIPv6Net + `
`

// rcptZoneData is the recipient list (rbldnsd dnset).
var rcptZoneData = `# authbl-rcpt test list: SHA-1 of lowercased addresses
:` + listedCode + `:credential dropbox
` + rcptHash(dropbox) + `
`

// rcptHash is the recipient list's label for addr.
func rcptHash(addr string) string {
	sum := sha1.Sum([]byte(strings.ToLower(addr)))
	return hex.EncodeToString(sum[:])
}

// ipQueryName is the IP list's query name for ip: reversed octets, or
// reversed nibbles for IPv6.
func ipQueryName(ip string) string {
	a := netip.MustParseAddr(ip).Unmap()
	var labels []string
	if a.Is4() {
		b := a.As4()
		for i := 3; i >= 0; i-- {
			labels = append(labels, fmt.Sprint(b[i]))
		}
	} else {
		b := a.As16()
		for i := 15; i >= 0; i-- {
			labels = append(labels, fmt.Sprintf("%x", b[i]&0xf), fmt.Sprintf("%x", b[i]>>4))
		}
	}
	return strings.Join(labels, ".") + "." + ipZone
}

// rcptQueryName is the recipient list's query name for addr.
func rcptQueryName(addr string) string {
	return rcptHash(addr) + "." + rcptZone
}

// rbldnsd is one rbldnsd serving the test lists on a loopback UDP port,
// logging every query.
type rbldnsd struct {
	addr     string // 127.0.0.1:PORT
	dir      string
	queryLog logFile
	proc     *process
}

// startRBLDNSD starts rbldnsd for the test and stops it at the end.
func startRBLDNSD(t *testing.T) *rbldnsd {
	t.Helper()
	dir := testDir(t, "rbldnsd")
	files := map[string]string{"ip4.zone": ip4Zone, "ip6.zone": ip6Zone, "rcpt.zone": rcptZoneData}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// rbldnsd opens its query log after dropping to user rbldns.
	logPath := filepath.Join(dir, "query.log")
	if err := os.WriteFile(logPath, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	u, err := lookupUser("rbldns")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(logPath, u.uid, u.gid); err != nil {
		t.Fatal(err)
	}

	port := mustFreePort(t, "udp")
	r := &rbldnsd{
		addr:     fmt.Sprintf("127.0.0.1:%d", port),
		dir:      dir,
		queryLog: logFile{logPath},
	}
	r.proc, err = startProcess("rbldnsd", filepath.Join(dir, "rbldnsd.out"),
		"rbldnsd", "-n", "-b", fmt.Sprintf("127.0.0.1/%d", port), "-w", dir,
		"-t", "60", "-c", "1s", "-l", "+query.log",
		ipZone+":ip4set:ip4.zone",
		ipZone+":ip6trie:ip6.zone",
		rcptZone+":dnset:rcpt.zone")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.stop() })

	// Ready when the test point answers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		rcode, _, err := r.query(ipQueryName("127.0.0.2"))
		if err == nil && rcode == dns.RcodeSuccess {
			break
		}
		if !r.proc.running() || time.Now().After(deadline) {
			t.Fatalf("rbldnsd is not answering (rcode %d, err %v); its output:\n%s",
				rcode, err, r.proc.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return r
}

// stop stops rbldnsd; the port then answers nothing.
func (r *rbldnsd) stop() {
	r.proc.stop(5 * time.Second)
}

// query asks rbldnsd for the A records of name.
func (r *rbldnsd) query(name string) (rcode int, addrs []string, err error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	c := &dns.Client{Net: "udp", Timeout: time.Second}
	resp, _, err := c.Exchange(m, r.addr)
	if err != nil {
		return -1, nil, err
	}
	for _, rr := range resp.Answer {
		if a, ok := rr.(*dns.A); ok {
			addrs = append(addrs, a.A.String())
		}
	}
	return resp.Rcode, addrs, nil
}

// queried returns the lines of the query log, after mark, that ask for
// name.
func (r *rbldnsd) queried(mark int64, name string) []string {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	var found []string
	for _, line := range r.queryLog.linesSince(mark) {
		for _, field := range strings.Fields(strings.ToLower(line)) {
			if strings.TrimSuffix(field, ".") == name {
				found = append(found, line)
				break
			}
		}
	}
	return found
}

// waitQueried waits until name was asked for after mark (the query log
// is written as rbldnsd answers).
func (r *rbldnsd) waitQueried(t *testing.T, mark int64, name string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(r.queried(mark, name)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("rbldnsd was not asked for %s; queries since the mark:\n%s",
				name, strings.Join(r.queryLog.linesSince(mark), "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
