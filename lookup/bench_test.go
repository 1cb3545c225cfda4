package lookup_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/authbl-milter/authbl-milter/lookup"
)

// Benchmarks of the per-transaction work of the lookup package; the
// figures and how to read them are in BENCHMARKS.md.

func BenchmarkIPQueryName(b *testing.B) {
	for _, ip := range []string{"192.0.2.66", "2001:db8::66"} {
		a := netip.MustParseAddr(ip)
		b.Run(ip, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				lookup.IPQueryName(a, "authbl.example.test")
			}
		})
	}
}

func BenchmarkRecipientQueryName(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		n, _ := lookup.NormalizeRecipient("<User+Tag@Example.COM> NOTIFY=NEVER")
		lookup.RecipientQueryName(n, "authbl-rcpt.example.test")
	}
}

func BenchmarkClassify(b *testing.B) {
	l := &lookup.List{Name: "authbl", Match: []netip.Prefix{netip.MustParsePrefix("127.0.0.4/32")}}
	def := &lookup.List{Name: "default"}
	replies := map[string]lookup.Reply{
		"listed":     {Rcode: lookup.RcodeSuccess, A: []netip.Addr{netip.MustParseAddr("127.0.0.4")}},
		"nxdomain":   {Rcode: lookup.RcodeNameError},
		"error-code": {Rcode: lookup.RcodeSuccess, A: []netip.Addr{netip.MustParseAddr("127.255.255.254")}},
	}
	for name, r := range replies {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				l.Classify(r, nil)
			}
		})
	}
	b.Run("default-match", func(b *testing.B) {
		r := replies["listed"]
		for b.Loop() {
			def.Classify(r, nil)
		}
	})
}

// BenchmarkCacheHit is a cached answer, the steady state with warm
// caches; -cpu 1,2 shows how the one lock scales.
func BenchmarkCacheHit(b *testing.B) {
	f := newFake()
	c := lookup.NewCache(f, lookup.CacheOptions{Size: 10000, MinTTL: time.Hour, MaxTTL: time.Hour})
	names := make([]string, 1000)
	for i := range names {
		names[i] = fmt.Sprintf("%d.%d.2.0.192.bl.test.", i%256, i/256)
		c.LookupA(context.Background(), names[i])
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		i := 0
		for pb.Next() {
			c.LookupA(ctx, names[i%len(names)])
			i++
		}
	})
}

// BenchmarkCacheMiss is a name not cached: the flight bookkeeping, the
// goroutine of the query and the store, around a resolver that answers
// at once.
func BenchmarkCacheMiss(b *testing.B) {
	f := newFake()
	c := lookup.NewCache(f, lookup.CacheOptions{Size: 1000, MinTTL: time.Hour, MaxTTL: time.Hour})
	names := make([]string, 100000)
	for i := range names {
		names[i] = fmt.Sprintf("%d.%d.%d.10.bl.test.", i%256, i/256%256, i/65536)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.LookupA(context.Background(), names[i%len(names)])
		i++
	}
}

// BenchmarkCheckCached is Checker.Check of one IP against one list with a
// warm cache: the whole lookup cost of a transaction's client address.
func BenchmarkCheckCached(b *testing.B) {
	f := newFake()
	c := lookup.NewCache(f, lookup.CacheOptions{Size: 10000, MinTTL: time.Hour, MaxTTL: time.Hour})
	l := &lookup.List{Name: "authbl", Kind: lookup.KindIP, Zone: "bl.test"}
	ch := lookup.NewChecker([]*lookup.List{l}, c, nil)
	ctx := context.Background()
	ch.Check(ctx, lookup.KindIP, "192.0.2.66")
	b.ReportAllocs()
	for b.Loop() {
		ch.Check(ctx, lookup.KindIP, "192.0.2.66")
	}
}

// BenchmarkCheckFile is the same against a list served from a file.
func BenchmarkCheckFile(b *testing.B) {
	dir := b.TempDir()
	path := dir + "/authbl.zone"
	writeBenchFile(b, path)
	s, err := lookup.NewFileSource(path, "ip4set", "bl.test")
	if err != nil {
		b.Fatal(err)
	}
	l := &lookup.List{Name: "authbl", Kind: lookup.KindIP, Zone: "bl.test"}
	l.SetSource(s)
	ch := lookup.NewChecker([]*lookup.List{l}, nil, nil)
	ctx := context.Background()
	for _, ip := range []string{"192.0.2.66", "198.51.100.1"} {
		b.Run(ip, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ch.Check(ctx, lookup.KindIP, ip)
			}
		})
	}
}
