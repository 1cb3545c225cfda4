package lookup_test

// Attacks on the DNS client: a server that never answers, and a server
// that loses a datagram, as a DNS server does when a burst of queries
// overflows its receive buffer.

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authbl-milter/authbl-milter/lookup"
)

// lossyServer is a DNS server on loopback UDP that drops the first
// query for each name (or every query, when silent) and answers the
// others with 127.0.0.4.
type lossyServer struct {
	pc     net.PacketConn
	srv    *dns.Server
	silent bool

	mu   sync.Mutex
	seen map[string]int
}

func startLossy(t *testing.T, silent bool) *lossyServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &lossyServer{pc: pc, silent: silent, seen: make(map[string]int)}
	started := make(chan struct{})
	s.srv = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(s.serve),
		NotifyStartedFunc: func() { close(started) }}
	go s.srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { s.srv.Shutdown() })
	return s
}

func (s *lossyServer) addr() string { return s.pc.LocalAddr().String() }

func (s *lossyServer) serve(w dns.ResponseWriter, q *dns.Msg) {
	name := strings.ToLower(q.Question[0].Name)
	s.mu.Lock()
	s.seen[name]++
	n := s.seen[name]
	s.mu.Unlock()
	if s.silent || n == 1 {
		return // lost
	}
	m := new(dns.Msg)
	m.SetReply(q)
	m.Answer = []dns.RR{&dns.A{
		Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA,
			Class: dns.ClassINET, Ttl: 60},
		A: net.IPv4(127, 0, 0, 4),
	}}
	w.WriteMsg(m)
}

func (s *lossyServer) asked(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[strings.ToLower(dns.Fqdn(name))]
}

// TestAttackDNSClientHonoursCancellation: Resolver promises to honour
// the context's cancellation. The milter cancels a transaction's
// lookups at ABORT (and should when the MTA goes away); a lookup that
// waits on to its per-attempt timeout keeps a goroutine and a socket per
// recipient alive for nothing.
func TestAttackDNSClientHonoursCancellation(t *testing.T) {
	s := startLossy(t, true)
	c, err := lookup.NewDNSClient([]string{s.addr()}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)

	start := time.Now()
	_, err = c.LookupA(ctx, "2.0.0.127.authbl.example.test.")
	d := time.Since(start)
	if err == nil {
		t.Fatal("a lookup without an answer succeeded")
	}
	if d > time.Second {
		t.Fatalf("LookupA returned %v after its context was cancelled at 100ms", d)
	}
}

// TestAttackDNSClientResendsLostQuery: one lost UDP datagram must not
// cost the answer when the context leaves time to ask again. A client
// that asks each server only once fails the lookup after the per-attempt
// timeout when a query or its reply is lost, and the milter then counts
// a listed client as an error (accepted with on_error = accept).
// TestAttackManyConcurrentConnections in the milter package shows the
// loss happening under load.
func TestAttackDNSClientResendsLostQuery(t *testing.T) {
	s := startLossy(t, false)
	c, err := lookup.NewDNSClient([]string{s.addr()}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()

	const name = "2.0.0.127.authbl.example.test."
	reply, err := c.LookupA(ctx, name)
	if err != nil {
		t.Fatalf("LookupA: %v (asked %d times in a 4s budget with 1s attempts)",
			err, s.asked(name))
	}
	want := netip.MustParseAddr("127.0.0.4")
	if len(reply.A) != 1 || reply.A[0] != want {
		t.Fatalf("reply %+v, want %v", reply, want)
	}
}
