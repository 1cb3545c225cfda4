package zonefile

import (
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// The big zones are built once per process: 1M entries take a while.
var (
	bigOnce  sync.Map // name -> *bigZone
	bigSizes = 1_000_000
)

type bigZone struct {
	once   sync.Once
	text   string
	zone   *Zone
	heapMB float64 // live heap the parsed zone holds
	listed []string
	clean  []string
}

// bigIP4Set is an ip4set of bigSizes random /32 entries plus 1000 /24s,
// the shape of a large authbl mirror.
func bigIP4Set(b *testing.B) *bigZone {
	return big(b, "ip4set", func(z *bigZone) {
		r := rand.New(rand.NewPCG(1, 2))
		var sb strings.Builder
		sb.WriteString(":127.0.0.4:listed, see https://example.test/$\n")
		for i := range bigSizes {
			ip := r.Uint32()
			fmt.Fprintf(&sb, "%d.%d.%d.%d\n", ip>>24, ip>>16&255, ip>>8&255, ip&255)
			if i%1000 == 0 {
				z.listed = append(z.listed, fmt.Sprintf("%d.%d.%d.%d", ip&255, ip>>8&255, ip>>16&255, ip>>24))
			}
		}
		for range 1000 {
			ip := r.Uint32()
			fmt.Fprintf(&sb, "%d.%d.%d\n", ip>>24, ip>>16&255, ip>>8&255)
		}
		for range 1000 {
			ip := r.Uint32()
			z.clean = append(z.clean, fmt.Sprintf("%d.%d.%d.%d", ip&255, ip>>8&255, ip>>16&255, ip>>24))
		}
		z.text = sb.String()
	}, IP4Set)
}

// bigDNSet is a dnset of bigSizes recipient hashes, the authbl-rcpt shape.
func bigDNSet(b *testing.B) *bigZone {
	return big(b, "dnset", func(z *bigZone) {
		var sb strings.Builder
		sb.WriteString(":127.0.0.2:dropbox\n")
		for i := range bigSizes {
			sum := sha1.Sum(fmt.Appendf(nil, "user%d@example.test", i))
			h := hex.EncodeToString(sum[:])
			sb.WriteString(h + "\n")
			if i%1000 == 0 {
				z.listed = append(z.listed, h)
			}
		}
		for i := range 1000 {
			sum := sha1.Sum(fmt.Appendf(nil, "other%d@example.test", i))
			z.clean = append(z.clean, hex.EncodeToString(sum[:]))
		}
		z.text = sb.String()
	}, DNSet)
}

func big(b *testing.B, name string, gen func(*bigZone), f Format) *bigZone {
	v, _ := bigOnce.LoadOrStore(name, &bigZone{})
	z := v.(*bigZone)
	z.once.Do(func() {
		gen(z)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		zone, err := Parse(strings.NewReader(z.text), f)
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		z.zone = zone
		z.heapMB = float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
	})
	return z
}

func BenchmarkParseIP4Set1M(b *testing.B) {
	z := bigIP4Set(b)
	b.SetBytes(int64(len(z.text)))
	for b.Loop() {
		if _, err := Parse(strings.NewReader(z.text), IP4Set); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(z.heapMB, "heap-MB")
}

func BenchmarkParseDNSet1M(b *testing.B) {
	z := bigDNSet(b)
	b.SetBytes(int64(len(z.text)))
	for b.Loop() {
		if _, err := Parse(strings.NewReader(z.text), DNSet); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(z.heapMB, "heap-MB")
}

func benchQuery(b *testing.B, z *bigZone, names []string, listed bool) {
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		got := z.zone.Query(names[i%len(names)])
		if (got != nil) != listed {
			b.Fatalf("%s: listed %v", names[i%len(names)], got != nil)
		}
		i++
	}
	b.ReportMetric(z.heapMB, "heap-MB")
}

func BenchmarkQueryIP4Set1MListed(b *testing.B) { z := bigIP4Set(b); benchQuery(b, z, z.listed, true) }
func BenchmarkQueryIP4Set1MClean(b *testing.B)  { z := bigIP4Set(b); benchQuery(b, z, z.clean, false) }
func BenchmarkQueryDNSet1MListed(b *testing.B)  { z := bigDNSet(b); benchQuery(b, z, z.listed, true) }
func BenchmarkQueryDNSet1MClean(b *testing.B)   { z := bigDNSet(b); benchQuery(b, z, z.clean, false) }
