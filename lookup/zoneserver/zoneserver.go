// Package zoneserver serves blocklist zones from memory over DNS (UDP and
// TCP) on a local address. The demo uses it to show the milter working
// with nothing installed, and tests use it as a DNS server they control:
// it can be told to stay silent, fail, refuse or garble its replies, and
// it records every query it receives.
package zoneserver

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/authbl-milter/authbl-milter/lookup"
)

// Behavior says how the server answers the queries of one zone.
type Behavior int

// The behaviours a zone can be given.
const (
	Normal    Behavior = iota // answer from the records
	Silent                    // never answer
	ServFail                  // answer SERVFAIL
	Refused                   // answer REFUSED
	Malformed                 // answer bytes that are no DNS message
	Truncated                 // answer over UDP with TC set, properly over TCP
)

// Server is an in-memory DNS server for blocklist zones.
type Server struct {
	mu       sync.Mutex
	zones    map[string]Behavior // zone (lowercase fqdn) -> behaviour
	records  map[string][]net.IP // name (lowercase fqdn) -> A records
	queries  []string            // names asked, in order
	delay    time.Duration       // added before each answer
	ttl      uint32              // TTL of every answer
	udp, tcp *dns.Server
	addr     string
}

// New returns a server with no zones.
func New() *Server {
	return &Server{
		zones:   make(map[string]Behavior),
		records: make(map[string][]net.IP),
		ttl:     60,
	}
}

// AddZone makes the server authoritative for zone. Names under it that
// have no records answer NXDOMAIN.
func (s *Server) AddZone(zone string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	z := fqdn(zone)
	if _, ok := s.zones[z]; !ok {
		s.zones[z] = Normal
	}
}

// SetBehavior sets how the queries under zone are answered.
func (s *Server) SetBehavior(zone string, b Behavior) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.zones[fqdn(zone)] = b
}

// SetDelay delays every answer by d.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// AddIP lists ip in zone with the given answer codes.
func (s *Server) AddIP(zone, ip string, codes ...string) error {
	addr, err := lookup.ParseClientAddr(ip)
	if err != nil {
		return err
	}
	return s.AddName(lookup.IPQueryName(addr, zone), zone, codes...)
}

// AddRecipient lists the address rcpt in zone with the given codes.
func (s *Server) AddRecipient(zone, rcpt string, codes ...string) error {
	n, err := lookup.NormalizeRecipient(rcpt)
	if err != nil {
		return err
	}
	return s.AddName(lookup.RecipientQueryName(n, zone), zone, codes...)
}

// AddName gives name, under zone, A records with the given codes.
func (s *Server) AddName(name, zone string, codes ...string) error {
	var ips []net.IP
	for _, c := range codes {
		a, err := netip.ParseAddr(c)
		if err != nil || !a.Is4() {
			return fmt.Errorf("zoneserver: code %q is no IPv4 address", c)
		}
		ips = append(ips, net.IP(a.AsSlice()))
	}
	s.AddZone(zone)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[fqdn(name)] = ips
	return nil
}

// Queries returns the names asked so far, lowercased.
func (s *Server) Queries() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.queries...)
}

// Start listens on addr (for example "127.0.0.1:0") over UDP and TCP on
// the same port, and serves until Close.
func (s *Server) Start(addr string) error {
	pc, ln, err := listenBoth(addr)
	if err != nil {
		return fmt.Errorf("zoneserver: %w", err)
	}
	s.addr = pc.LocalAddr().String()
	s.udp = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serveUDP)}
	s.tcp = &dns.Server{Listener: ln, Handler: dns.HandlerFunc(s.serveTCP)}
	started := make(chan struct{}, 2)
	s.udp.NotifyStartedFunc = func() { started <- struct{}{} }
	s.tcp.NotifyStartedFunc = func() { started <- struct{}{} }
	go s.udp.ActivateAndServe()
	go s.tcp.ActivateAndServe()
	<-started
	<-started
	return nil
}

// listenBoth opens UDP and TCP on the same port. With port 0 the kernel
// picks the UDP port, which another process may hold for TCP: then it tries
// again with another port.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	var err error
	for range 20 {
		var pc net.PacketConn
		pc, err = net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		var ln net.Listener
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if _, port, _ := net.SplitHostPort(addr); port != "0" {
			break
		}
	}
	return nil, nil, err
}

// Addr returns the host:port the server listens on.
func (s *Server) Addr() string { return s.addr }

// Close stops the server.
func (s *Server) Close() error {
	if s.udp != nil {
		s.udp.Shutdown()
	}
	if s.tcp != nil {
		s.tcp.Shutdown()
	}
	return nil
}

func (s *Server) serveUDP(w dns.ResponseWriter, q *dns.Msg) { s.serve(w, q, false) }
func (s *Server) serveTCP(w dns.ResponseWriter, q *dns.Msg) { s.serve(w, q, true) }

func (s *Server) serve(w dns.ResponseWriter, q *dns.Msg, tcp bool) {
	if len(q.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(q, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	name := strings.ToLower(q.Question[0].Name)

	s.mu.Lock()
	s.queries = append(s.queries, name)
	zone, behavior, known := s.zoneOf(name)
	records := s.records[name]
	delay, ttl := s.delay, s.ttl
	s.mu.Unlock()

	if delay > 0 {
		time.Sleep(delay)
	}
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	switch {
	case !known:
		m.Rcode = dns.RcodeRefused
	case behavior == Silent:
		return
	case behavior == ServFail:
		m.Rcode = dns.RcodeServerFailure
	case behavior == Refused:
		m.Rcode = dns.RcodeRefused
	case behavior == Malformed:
		w.Write([]byte{0xde, 0xad, 0xbe, 0xef})
		return
	case behavior == Truncated && !tcp:
		m.Truncated = true
	case len(records) == 0 || q.Question[0].Qtype != dns.TypeA:
		if len(records) == 0 {
			m.Rcode = dns.RcodeNameError
		}
		m.Ns = []dns.RR{&dns.SOA{
			Hdr:     dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: ttl},
			Ns:      "ns." + zone,
			Mbox:    "hostmaster." + zone,
			Serial:  1,
			Refresh: 3600, Retry: 600, Expire: 86400,
			Minttl: ttl,
		}}
	default:
		for _, ip := range records {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA,
					Class: dns.ClassINET, Ttl: ttl},
				A: ip,
			})
		}
	}
	w.WriteMsg(m)
}

// zoneOf finds the zone that name is under; the caller holds s.mu.
func (s *Server) zoneOf(name string) (string, Behavior, bool) {
	for n := name; ; {
		if b, ok := s.zones[n]; ok {
			return n, b, true
		}
		i := strings.IndexByte(n, '.')
		if i < 0 || i == len(n)-1 {
			return "", Normal, false
		}
		n = n[i+1:]
	}
}

func fqdn(s string) string { return dns.Fqdn(strings.ToLower(s)) }
