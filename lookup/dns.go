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

// A Peeker is a Resolver that can tell, without waiting, whether it holds
// the answer for a name already: a cache, or a list served from memory.
// Peek returns that answer and true, or false when answering would mean
// asking a server. It never blocks.
type Peeker interface {
	Resolver
	Peek(name string) (Reply, bool)
}

// ErrNoServers is returned when no DNS server is configured or found.
var ErrNoServers = errors.New("no DNS servers")

// DNSClient is a Resolver that asks DNS servers directly with miekg/dns,
// without the system's resolver library, so that it sees the raw response
// codes. Queries carry EDNS0 (1232 octets, the DNS flag day size). Servers
// are tried in turn, starting with a different one for each query, for as
// many rounds as Attempts says: a timeout, an unreachable server, a
// malformed reply or an answer other than NOERROR and NXDOMAIN passes the
// query on to the next server while the context allows. A truncated UDP
// reply is asked again over TCP. The context's deadline and its
// cancellation both end a query at once, even one waiting for a reply.
type DNSClient struct {
	servers  []string
	timeout  time.Duration
	attempts int
	udp      *dns.Client
	tcp      *dns.Client
	next     atomic.Uint32
}

// DNSOptions configures a DNSClient.
type DNSOptions struct {
	// Servers are host:port pairs. Empty means the nameservers of
	// /etc/resolv.conf.
	Servers []string
	// Timeout bounds each exchange with one server; 0 means 2s.
	Timeout time.Duration
	// Attempts is how many rounds over the servers a query may take; 0
	// means DefaultAttempts.
	Attempts int
}

// DefaultAttempts is the number of rounds over the servers when
// DNSOptions.Attempts is 0, as resolv.conf's default.
const DefaultAttempts = 2

// NewDNSClient returns a client for servers (host:port) with the default
// number of attempts. An empty list means the nameservers of
// /etc/resolv.conf. timeout bounds each exchange.
func NewDNSClient(servers []string, timeout time.Duration) (*DNSClient, error) {
	return NewDNSClientOptions(DNSOptions{Servers: servers, Timeout: timeout})
}

// NewDNSClientOptions returns a client configured by o.
func NewDNSClientOptions(o DNSOptions) (*DNSClient, error) {
	servers := o.Servers
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
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	attempts := o.Attempts
	if attempts <= 0 {
		attempts = DefaultAttempts
	}
	return &DNSClient{
		servers:  append([]string(nil), servers...),
		timeout:  timeout,
		attempts: attempts,
		udp:      &dns.Client{Net: "udp", Timeout: timeout, UDPSize: ednsSize},
		tcp:      &dns.Client{Net: "tcp", Timeout: timeout},
	}, nil
}

// ednsSize is the UDP payload size announced with EDNS0.
const ednsSize = 1232

// Servers returns the servers the client asks.
func (c *DNSClient) Servers() []string { return append([]string(nil), c.servers...) }

// LookupA implements Resolver.
func (c *DNSClient) LookupA(ctx context.Context, name string) (Reply, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	q.SetEdns0(ednsSize, false)

	start := int(c.next.Add(1))
	var (
		lastErr   error
		lastReply *Reply // the last answer that was a failure, such as SERVFAIL
	)
	for i := range len(c.servers) * c.attempts {
		if err := ctx.Err(); err != nil {
			lastErr = scrub(err)
			break
		}
		server := c.servers[(start+i)%len(c.servers)]
		r, err := c.exchange(ctx, q, server)
		if err == nil {
			var reply Reply
			if reply, err = parseReply(q, r); err == nil {
				// A yes or a no (NXDOMAIN) is final; a server that
				// fails or refuses is worth asking the next one about.
				if r.Rcode == dns.RcodeSuccess || r.Rcode == dns.RcodeNameError {
					return reply, nil
				}
				lastReply, lastErr = &reply, nil
				continue
			}
		}
		lastErr, lastReply = err, nil
	}
	if lastReply != nil {
		return *lastReply, nil
	}
	return Reply{}, fmt.Errorf("dns: %w", lastErr)
}

// exchange asks one server, over UDP and then over TCP when the reply is
// truncated, each exchange bounded by the client's timeout and by ctx.
func (c *DNSClient) exchange(ctx context.Context, q *dns.Msg, server string) (*dns.Msg, error) {
	r, err := c.exchangeOnce(ctx, c.udp, q, server)
	if err == nil && r.Truncated {
		r, err = c.exchangeOnce(ctx, c.tcp, q, server)
	}
	return r, err
}

// exchangeOnce runs one exchange. miekg/dns honours only a context's
// deadline, so the connection is also closed when ctx is cancelled, which
// ends a read that is waiting for a reply.
func (c *DNSClient) exchangeOnce(ctx context.Context, cl *dns.Client, q *dns.Msg,
	server string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	co, err := cl.DialContext(ctx, server)
	if err != nil {
		if ctx.Err() != nil {
			return nil, scrub(ctx.Err())
		}
		return nil, scrub(err)
	}
	defer co.Close()
	stop := context.AfterFunc(ctx, func() { co.Close() })
	defer stop()

	r, _, err := cl.ExchangeWithConnContext(ctx, q, co)
	if err != nil {
		if ctx.Err() != nil {
			return nil, scrub(ctx.Err())
		}
		return nil, scrub(err)
	}
	return r, nil
}

// parseReply checks that r answers q and extracts the A records of the
// query name, following CNAMEs within the answer. The TTL is the smallest
// of those records, or for a negative answer that of the SOA record as
// RFC 2308 says: the smaller of its TTL and its minimum field.
func parseReply(q, r *dns.Msg) (Reply, error) {
	if !r.Response || len(r.Question) != 1 || r.Question[0].Qtype != dns.TypeA ||
		!strings.EqualFold(r.Question[0].Name, q.Question[0].Name) {
		return Reply{}, errors.New("malformed reply: it does not answer the question")
	}
	out := Reply{Rcode: r.Rcode}
	owner := q.Question[0].Name
	for range 8 { // CNAME hops
		cname := ""
		for _, rr := range r.Answer {
			h := rr.Header()
			if !strings.EqualFold(h.Name, owner) {
				continue
			}
			switch rr := rr.(type) {
			case *dns.A:
				ip, ok := netip.AddrFromSlice(rr.A.To4())
				if !ok {
					continue
				}
				if len(out.A) == 0 || h.Ttl < out.TTL {
					out.TTL = h.Ttl
				}
				out.A = append(out.A, ip)
			case *dns.CNAME:
				cname = rr.Target
			}
		}
		if len(out.A) > 0 || cname == "" {
			break
		}
		owner = cname
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
