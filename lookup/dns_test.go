package lookup_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/authbl-milter/authbl-milter/lookup"
	"github.com/authbl-milter/authbl-milter/lookup/zoneserver"
)

// rawServer is a DNS server on loopback whose every reply the test writes.
type rawServer struct {
	addr    string
	mu      sync.Mutex
	queries []*dns.Msg
}

func startRaw(t *testing.T, answer func(q *dns.Msg) *dns.Msg) *rawServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{addr: pc.LocalAddr().String()}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		s.mu.Lock()
		s.queries = append(s.queries, q)
		s.mu.Unlock()
		if r := answer(q); r != nil {
			w.WriteMsg(r)
		}
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return s
}

// query returns the i-th query received.
func (s *rawServer) query(i int) *dns.Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[i]
}

func a(name, ip string, ttl uint32) *dns.A {
	return &dns.A{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
		A: net.ParseIP(ip)}
}

func lookupOne(t *testing.T, c *lookup.DNSClient, name string) (lookup.Reply, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return c.LookupA(ctx, name)
}

func TestDNSQueryCarriesEDNS0(t *testing.T) {
	s := startRaw(t, func(q *dns.Msg) *dns.Msg {
		r := new(dns.Msg)
		r.SetRcode(q, dns.RcodeNameError)
		return r
	})
	c, err := lookup.NewDNSClient([]string{s.addr}, time.Second)
	must(t, err)
	if _, err := lookupOne(t, c, "1.2.0.192.bl.test"); err != nil {
		t.Fatal(err)
	}
	opt := s.query(0).IsEdns0()
	if opt == nil || opt.UDPSize() != 1232 {
		t.Fatalf("query without EDNS0 or with the wrong size: %v", opt)
	}
}

func TestDNSReplies(t *testing.T) {
	const qname = "1.2.0.192.bl.test."
	tests := []struct {
		name    string
		answer  func(q *dns.Msg) *dns.Msg
		rcode   int
		codes   string
		ttl     uint32
		wantErr bool
	}{
		{"smallest TTL, a TTL of 0 included", func(q *dns.Msg) *dns.Msg {
			r := new(dns.Msg)
			r.SetReply(q)
			r.Answer = []dns.RR{a(qname, "127.0.0.4", 0), a(qname, "127.0.0.5", 300)}
			return r
		}, dns.RcodeSuccess, "127.0.0.4,127.0.0.5", 0, false},
		{"negative TTL from the SOA", func(q *dns.Msg) *dns.Msg {
			r := new(dns.Msg)
			r.SetRcode(q, dns.RcodeNameError)
			r.Ns = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: "bl.test.", Rrtype: dns.TypeSOA,
				Class: dns.ClassINET, Ttl: 600}, Ns: "ns.bl.test.", Mbox: "h.bl.test.", Minttl: 30}}
			return r
		}, dns.RcodeNameError, "-", 30, false},
		{"A records of another name do not count", func(q *dns.Msg) *dns.Msg {
			r := new(dns.Msg)
			r.SetReply(q)
			r.Answer = []dns.RR{a("2.0.0.127.bl.test.", "127.0.0.4", 60)}
			return r
		}, dns.RcodeSuccess, "-", 0, false},
		{"a CNAME is followed", func(q *dns.Msg) *dns.Msg {
			r := new(dns.Msg)
			r.SetReply(q)
			r.Answer = []dns.RR{
				&dns.CNAME{Hdr: dns.RR_Header{Name: qname, Rrtype: dns.TypeCNAME,
					Class: dns.ClassINET, Ttl: 60}, Target: "listed.bl.test."},
				a("listed.bl.test.", "127.0.0.4", 60),
			}
			return r
		}, dns.RcodeSuccess, "127.0.0.4", 60, false},
		{"an answer to another question", func(q *dns.Msg) *dns.Msg {
			r := new(dns.Msg)
			r.SetReply(q)
			r.Question[0].Name = "2.0.0.127.bl.test."
			r.Answer = []dns.RR{a("2.0.0.127.bl.test.", "127.0.0.4", 60)}
			return r
		}, 0, "", 0, true},
		{"a reply without the QR bit", func(q *dns.Msg) *dns.Msg {
			r := new(dns.Msg)
			r.SetReply(q)
			r.Response = false
			r.Answer = []dns.RR{a(qname, "127.0.0.4", 60)}
			return r
		}, 0, "", 0, true},
		{"an A record that is IPv6 is skipped", func(q *dns.Msg) *dns.Msg {
			r := new(dns.Msg)
			r.SetReply(q)
			r.Answer = []dns.RR{&dns.AAAA{Hdr: dns.RR_Header{Name: qname, Rrtype: dns.TypeAAAA,
				Class: dns.ClassINET, Ttl: 60}, AAAA: net.ParseIP("::1")}}
			return r
		}, dns.RcodeSuccess, "-", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startRaw(t, tt.answer)
			c, err := lookup.NewDNSClientOptions(lookup.DNSOptions{Servers: []string{s.addr},
				Timeout: 300 * time.Millisecond, Attempts: 1})
			must(t, err)
			r, err := lookupOne(t, c, qname)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %+v, want an error", r)
				}
				return
			}
			ans := lookup.Answer{Codes: r.A}
			if err != nil || r.Rcode != tt.rcode || ans.CodesString() != tt.codes || r.TTL != tt.ttl {
				t.Fatalf("got rcode %d codes %s TTL %d, %v; want %d %s %d", r.Rcode,
					ans.CodesString(), r.TTL, err, tt.rcode, tt.codes, tt.ttl)
			}
		})
	}
}

// TestDNSAttempts: a server that never answers is asked Attempts times,
// each exchange bounded by the timeout.
func TestDNSAttempts(t *testing.T) {
	z := zoneserver.New()
	z.AddZone("bl.test")
	z.SetBehavior("bl.test", zoneserver.Silent)
	must(t, z.Start("127.0.0.1:0"))
	t.Cleanup(func() { z.Close() })
	c, err := lookup.NewDNSClientOptions(lookup.DNSOptions{Servers: []string{z.Addr()},
		Timeout: 100 * time.Millisecond, Attempts: 3})
	must(t, err)

	start := time.Now()
	_, err = lookupOne(t, c, "1.2.0.192.bl.test")
	if !lookup.NoAnswer(err) {
		t.Fatalf("error %v, want no answer", err)
	}
	if n := len(z.Queries()); n != 3 {
		t.Fatalf("%d queries, want 3", n)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Fatalf("took %v for 3 attempts of 100ms", d)
	}
}

// TestDNSFailingServerPassesToNext: SERVFAIL and REFUSED from one server
// send the query on; the other's answer counts.
func TestDNSFailingServerPassesToNext(t *testing.T) {
	for _, b := range []zoneserver.Behavior{zoneserver.ServFail, zoneserver.Refused,
		zoneserver.Malformed} {
		bad := zoneserver.New()
		must(t, bad.AddIP("bl.test", "192.0.2.66", "127.0.0.4"))
		bad.SetBehavior("bl.test", b)
		must(t, bad.Start("127.0.0.1:0"))
		good := zoneserver.New()
		must(t, good.AddIP("bl.test", "192.0.2.66", "127.0.0.4"))
		must(t, good.Start("127.0.0.1:0"))

		c, err := lookup.NewDNSClientOptions(lookup.DNSOptions{
			Servers: []string{bad.Addr(), good.Addr()}, Timeout: 300 * time.Millisecond, Attempts: 1})
		must(t, err)
		for i := range 4 { // the rotation starts at each server in turn
			r, err := lookupOne(t, c, "66.2.0.192.bl.test")
			if err != nil || r.Rcode != dns.RcodeSuccess || len(r.A) != 1 {
				t.Fatalf("behaviour %d, query %d: %+v, %v", b, i, r, err)
			}
		}
		bad.Close()
		good.Close()
	}
}

// TestDNSLastFailureIsReported: when every server fails, the answer is the
// last failure, so that Classify can name it.
func TestDNSLastFailureIsReported(t *testing.T) {
	z := zoneserver.New()
	z.AddZone("bl.test")
	z.SetBehavior("bl.test", zoneserver.ServFail)
	must(t, z.Start("127.0.0.1:0"))
	t.Cleanup(func() { z.Close() })
	c, err := lookup.NewDNSClientOptions(lookup.DNSOptions{Servers: []string{z.Addr()},
		Timeout: 300 * time.Millisecond, Attempts: 2})
	must(t, err)
	r, err := lookupOne(t, c, "1.2.0.192.bl.test")
	if err != nil || r.Rcode != dns.RcodeServerFailure {
		t.Fatalf("got %+v, %v; want the SERVFAIL reply", r, err)
	}
	if n := len(z.Queries()); n != 2 {
		t.Fatalf("%d queries, want 2 (one per attempt)", n)
	}
}

// TestDNSCancelEndsWait: cancelling the context (not a deadline) ends a
// query that waits for a silent server at once.
func TestDNSCancelEndsWait(t *testing.T) {
	z := zoneserver.New()
	z.AddZone("bl.test")
	z.SetBehavior("bl.test", zoneserver.Silent)
	must(t, z.Start("127.0.0.1:0"))
	t.Cleanup(func() { z.Close() })
	c, err := lookup.NewDNSClient([]string{z.Addr()}, 10*time.Second)
	must(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, err = c.LookupA(ctx, "1.2.0.192.bl.test")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("a cancelled query took %v to return", d)
	}
}
