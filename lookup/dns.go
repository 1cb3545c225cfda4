package lookup

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Response codes that Classify tells apart. Others are errors.
const (
	RcodeSuccess   = dns.RcodeSuccess
	RcodeNameError = dns.RcodeNameError
)

// Reply is the part of a DNS reply that blocklists use.
type Reply struct {
	Rcode int          // the DNS response code
	A     []netip.Addr // A records for the query name
	TTL   uint32       // smallest TTL of the A records (or SOA minimum)
}

// Resolver asks for the A records of a name. Implementations honour the
// context's deadline and cancellation.
type Resolver interface {
	LookupA(ctx context.Context, name string) (Reply, error)
}

// ErrNoServers is returned when no DNS server is configured or found.
var ErrNoServers = errors.New("no DNS servers")

// DNSClient is a Resolver that asks DNS servers directly with miekg/dns,
// without the system's resolver library, so that it sees the raw response
// codes. Servers are tried in turn, starting with a different one for
// each query; a server that fails or times out passes the query to the
// next while the context allows. A truncated UDP reply is asked again
// over TCP.
type DNSClient struct {
	servers []string
	timeout time.Duration
	udp     *dns.Client
	tcp     *dns.Client
	next    atomic.Uint32
}

// NewDNSClient returns a client for servers (host:port). An empty list
// means the nameservers of /etc/resolv.conf. timeout bounds each attempt.
func NewDNSClient(servers []string, timeout time.Duration) (*DNSClient, error) {
	if len(servers) == 0 {
		cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("dns: %w", err)
		}
		for _, s := range cc.Servers {
			servers = append(servers, net.JoinHostPort(s, cc.Port))
		}
	}
	if len(servers) == 0 {
		return nil, fmt.Errorf("dns: %w", ErrNoServers)
	}
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	return &DNSClient{
		servers: servers,
		timeout: timeout,
		udp:     &dns.Client{Net: "udp", Timeout: timeout, UDPSize: 1232},
		tcp:     &dns.Client{Net: "tcp", Timeout: timeout},
	}, nil
}

// Servers returns the servers the client asks.
func (c *DNSClient) Servers() []string { return append([]string(nil), c.servers...) }

// LookupA implements Resolver.
func (c *DNSClient) LookupA(ctx context.Context, name string) (Reply, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	q.SetEdns0(1232, false)

	start := int(c.next.Add(1))
	var lastErr error
	for i := range c.servers {
		if err := ctx.Err(); err != nil {
			if lastErr == nil {
				lastErr = err
			}
			break
		}
		server := c.servers[(start+i)%len(c.servers)]
		r, err := c.exchange(ctx, q, server)
		if err != nil {
			lastErr = err
			continue
		}
		// A server that fails or refuses is worth asking the next one
		// about; a yes or a no (NXDOMAIN) is final.
		failed := r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError
		if failed && i < len(c.servers)-1 {
			lastErr = fmt.Errorf("server answered %s", rcodeName(r.Rcode))
			continue
		}
		return parseReply(q, r)
	}
	return Reply{}, fmt.Errorf("dns: %w", lastErr)
}

func (c *DNSClient) exchange(ctx context.Context, q *dns.Msg, server string) (*dns.Msg, error) {
	r, _, err := c.udp.ExchangeContext(ctx, q, server)
	if err == nil && r.Truncated {
		r, _, err = c.tcp.ExchangeContext(ctx, q, server)
	}
	if err != nil {
		return nil, scrub(err)
	}
	return r, nil
}

// parseReply checks that r answers q and extracts its A records.
func parseReply(q, r *dns.Msg) (Reply, error) {
	if len(r.Question) != 1 || !strings.EqualFold(r.Question[0].Name, q.Question[0].Name) {
		return Reply{}, errors.New("dns: malformed reply: question does not match")
	}
	out := Reply{Rcode: r.Rcode}
	for _, rr := range r.Answer {
		a, ok := rr.(*dns.A)
		if !ok {
			continue // CNAMEs and other records do not count
		}
		ip, ok := netip.AddrFromSlice(a.A.To4())
		if !ok {
			continue
		}
		out.A = append(out.A, ip)
		if out.TTL == 0 || a.Hdr.Ttl < out.TTL {
			out.TTL = a.Hdr.Ttl
		}
	}
	if out.Rcode == dns.RcodeNameError || (out.Rcode == dns.RcodeSuccess && len(out.A) == 0) {
		for _, rr := range r.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				out.TTL = min(soa.Hdr.Ttl, soa.Minttl)
			}
		}
	}
	return out, nil
}

// scrub removes the query name from errors that might carry it: a query
// name can hold an API key. Network errors name addresses, not queries.
func scrub(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errTimeout
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return errTimeout
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return fmt.Errorf("%w: %v", errUnreachable, err)
	}
	return fmt.Errorf("malformed reply: %s", firstLine(err.Error()))
}

// Errors for queries that got no answer at all.
var (
	errTimeout     = errors.New("timeout")
	errUnreachable = errors.New("server unreachable")
)

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func rcodeName(rcode int) string {
	if s, ok := dns.RcodeToString[rcode]; ok {
		return s
	}
	return fmt.Sprintf("rcode %d", rcode)
}
