package lookup_test

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/authbl-milter/authbl-milter/config"
	"github.com/authbl-milter/authbl-milter/lookup"
)

// TestCachePeek: Peek answers only from what the cache holds, counts a
// hit for it, and never asks or counts a miss.
func TestCachePeek(t *testing.T) {
	f := newFake()
	f.set(listedName, listedReply(60), nil)
	c, clk := newTestCache(f, lookup.CacheOptions{MaxTTL: time.Hour})

	if _, ok := c.Peek(listedName); ok {
		t.Fatal("Peek answered a name the cache does not hold")
	}
	if n, st := f.count(listedName), c.Stats(); n != 0 || st.Hits != 0 || st.Misses != 0 {
		t.Fatalf("after a Peek that missed: %d questions, stats %+v; want none", n, st)
	}
	ask(t, c, listedName)
	clk.advance(10 * time.Second)
	r, ok := c.Peek("66.2.0.192.BL.test") // case and the final dot do not matter
	if !ok || r.TTL != 50 || len(r.A) != 1 {
		t.Fatalf("Peek of a held name: %+v %v, want the answer with TTL 50", r, ok)
	}
	if st := c.Stats(); st.Hits != 1 || st.Misses != 1 {
		t.Fatalf("stats %+v, want 1 hit (the Peek) and 1 miss (the first question)", st)
	}
	clk.advance(50 * time.Second)
	if _, ok := c.Peek(listedName); ok {
		t.Fatal("Peek answered an expired name")
	}
	if n := f.count(listedName); n != 1 {
		t.Fatalf("%d questions, want 1: Peek never asks", n)
	}
}

// observed records what a Checker's observer is told.
type observed struct {
	mu    sync.Mutex
	lists []string
}

func (o *observed) observe(list string, _ lookup.Result, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.lists = append(o.lists, list)
}

// TestStartTakesHeldAnswersAndAsksTheRest: with two lists of a kind, one
// holding its answer in the cache, Start answers that one at once and
// Wait asks only the other; each list is counted once.
func TestStartTakesHeldAnswersAndAsksTheRest(t *testing.T) {
	f := newFake()
	one := netip.MustParseAddr("127.0.0.4")
	f.set("66.2.0.192.a.test.", lookup.Reply{Rcode: lookup.RcodeSuccess, TTL: 60, A: []netip.Addr{one}}, nil)
	// b answers NXDOMAIN without an SOA: kept for the floor.
	c, _ := newTestCache(f, lookup.CacheOptions{MinTTL: time.Minute, MaxTTL: time.Hour})
	lists := []*lookup.List{
		{Name: "a", Kind: lookup.KindIP, Zone: "a.test", Match: []netip.Prefix{netip.PrefixFrom(one, 32)}},
		{Name: "b", Kind: lookup.KindIP, Zone: "b.test", Match: []netip.Prefix{netip.PrefixFrom(one, 32)}},
		{Name: "rcpt", Kind: lookup.KindRecipient, Zone: "r.test"},
	}
	checker := lookup.NewChecker(lists, c, nil)
	var obs observed
	checker.SetObserver(obs.observe)
	ask(t, c, "66.2.0.192.a.test.") // list a's answer is now held

	lk := checker.Start(lookup.KindIP, "192.0.2.66", nil)
	if lk.Ready() {
		t.Fatal("Ready with list b's answer not held")
	}
	answers := lk.Wait(context.Background())
	if len(answers) != 2 || answers[0].List != "a" || answers[1].List != "b" {
		t.Fatalf("answers %+v, want lists a and b in order", answers)
	}
	if answers[0].Result != lookup.Listed || answers[1].Result != lookup.Clean {
		t.Fatalf("results %v, %v; want listed on a, clean on b", answers[0].Result, answers[1].Result)
	}
	if na, nb := f.count("66.2.0.192.a.test."), f.count("66.2.0.192.b.test."); na != 1 || nb != 1 {
		t.Fatalf("a asked %d times, b %d; want 1 each (a only before Start)", na, nb)
	}
	if len(obs.lists) != 2 {
		t.Fatalf("observer told of %v, want each list once", obs.lists)
	}

	// Both held now: ready at once, and Wait needs no live context.
	lk = checker.Start(lookup.KindIP, "192.0.2.66", nil)
	if !lk.Ready() {
		t.Fatal("not Ready with both answers held")
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	answers = lk.Wait(done)
	if answers[0].Result != lookup.Listed || answers[1].Result != lookup.Clean {
		t.Fatalf("held results %v, %v; want listed, clean", answers[0].Result, answers[1].Result)
	}
	if nb := f.count("66.2.0.192.b.test."); nb != 1 {
		t.Fatalf("b asked %d times, want 1", nb)
	}
	if st := c.Stats(); st.Hits != 3 || st.Misses != 2 {
		t.Fatalf("cache stats %+v, want 3 hits and 2 misses", st)
	}
}

// TestStartFileListsReadyAtOnce: lists served from a file are always
// ready, answer as Check does, and a list out of service still gives an
// error instead of a listing.
func TestStartFileListsReadyAtOnce(t *testing.T) {
	dir := t.TempDir()
	ip4 := filepath.Join(dir, "ip4.zone")
	writeFile(t, ip4, ip4File)
	c := fileChecker(t, config.List{Name: "ip4", Kind: "ip", File: ip4, Format: "ip4set",
		MatchPrefixes: config.DefaultMatchPrefixes(), TestPoint: "127.0.0.2", TestExpect: "127.0.0.4"})

	for _, ip := range []string{"192.0.2.66", "198.51.100.7", "192.0.2.254"} {
		lk := c.Start(lookup.KindIP, ip, nil)
		if !lk.Ready() {
			t.Fatalf("%s: a file list not ready", ip)
		}
		got := lk.Wait(context.Background())
		want := c.Check(context.Background(), lookup.KindIP, ip)
		if got[0].Result != want[0].Result || got[0].CodesString() != want[0].CodesString() {
			t.Errorf("%s: Start gave %v %s, Check %v %s", ip, got[0].Result, got[0].CodesString(),
				want[0].Result, want[0].CodesString())
		}
	}

	broken := filepath.Join(dir, "broken.zone")
	writeFile(t, broken, ip4File+"127.0.0.1\n") // lists everything
	c = fileChecker(t, config.List{Name: "broken", Kind: "ip", File: broken, Format: "ip4set",
		MatchPrefixes: config.DefaultMatchPrefixes(), TestPoint: "127.0.0.2", TestExpect: "127.0.0.4"})
	c.CheckHealth(context.Background())
	a := c.Start(lookup.KindIP, "192.0.2.66", nil).Wait(context.Background())[0]
	if a.Result != lookup.Error || !errors.Is(a.Err, lookup.ErrListOutOfService) {
		t.Fatalf("a listing from a list out of service: %v (%v), want an error", a.Result, a.Err)
	}
}
