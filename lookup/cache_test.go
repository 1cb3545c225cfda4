package lookup_test

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authbl-milter/authbl-milter/lookup"
)

// fakeResolver answers from a map and counts the questions. With gate
// set, every lookup waits for the gate to close (or its context to end).
type fakeResolver struct {
	mu        sync.Mutex
	answers   map[string]fakeAnswer
	calls     map[string]int
	gate      chan struct{}
	cancelled atomic.Int32 // lookups that ended by their context
}

type fakeAnswer struct {
	reply lookup.Reply
	err   error
}

func newFake() *fakeResolver {
	return &fakeResolver{answers: make(map[string]fakeAnswer), calls: make(map[string]int)}
}

func (f *fakeResolver) set(name string, r lookup.Reply, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.answers[name] = fakeAnswer{r, err}
}

func (f *fakeResolver) LookupA(ctx context.Context, name string) (lookup.Reply, error) {
	f.mu.Lock()
	f.calls[name]++
	a, ok := f.answers[name]
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			f.cancelled.Add(1)
			return lookup.Reply{}, ctx.Err()
		}
	}
	if !ok {
		return lookup.Reply{Rcode: lookup.RcodeNameError}, nil
	}
	return a.reply, a.err
}

func (f *fakeResolver) count(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[name]
}

// clock is a time the test moves.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

const listedName = "66.2.0.192.bl.test."

func listedReply(ttl uint32) lookup.Reply {
	return lookup.Reply{Rcode: lookup.RcodeSuccess, TTL: ttl,
		A: []netip.Addr{netip.MustParseAddr("127.0.0.4")}}
}

func newTestCache(f *fakeResolver, o lookup.CacheOptions) (*lookup.Cache, *clock) {
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	if o.Size == 0 {
		o.Size = 100
	}
	o.Now = clk.Now
	return lookup.NewCache(f, o), clk
}

func ask(t *testing.T, c lookup.Resolver, name string) lookup.Reply {
	t.Helper()
	r, err := c.LookupA(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCacheKeepsAnswersForTheirTTL(t *testing.T) {
	tests := []struct {
		name       string
		reply      lookup.Reply
		min, max   time.Duration
		keptFor    time.Duration // 0: not kept at all
		remaining1 uint32        // the TTL a hit reports one second later
	}{
		{"listed, TTL 60", listedReply(60), 0, time.Hour, 60 * time.Second, 59},
		{"NXDOMAIN, SOA minimum 30", lookup.Reply{Rcode: lookup.RcodeNameError, TTL: 30},
			0, time.Hour, 30 * time.Second, 29},
		{"no A records, TTL 20", lookup.Reply{Rcode: lookup.RcodeSuccess, TTL: 20},
			0, time.Hour, 20 * time.Second, 19},
		{"TTL raised to the floor", listedReply(1), 10 * time.Second, time.Hour, 10 * time.Second, 9},
		{"TTL cut to the ceiling", listedReply(86400), 0, time.Hour, time.Hour, 3599},
		{"TTL 0 without a floor: not kept", listedReply(0), 0, time.Hour, 0, 0},
		{"NXDOMAIN without SOA, with a floor", lookup.Reply{Rcode: lookup.RcodeNameError},
			5 * time.Second, time.Hour, 5 * time.Second, 4},
		{"SERVFAIL: not kept", lookup.Reply{Rcode: 2, TTL: 60}, 10 * time.Second, time.Hour, 0, 0},
		{"REFUSED: not kept", lookup.Reply{Rcode: 5, TTL: 60}, 10 * time.Second, time.Hour, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			f.set(listedName, tt.reply, nil)
			c, clk := newTestCache(f, lookup.CacheOptions{MinTTL: tt.min, MaxTTL: tt.max})
			ask(t, c, listedName)
			clk.advance(time.Second)
			r := ask(t, c, listedName)
			if tt.keptFor == 0 {
				if n := f.count(listedName); n != 2 {
					t.Fatalf("%d questions, want 2: the answer must not be kept", n)
				}
				return
			}
			if n := f.count(listedName); n != 1 {
				t.Fatalf("%d questions after 1s, want 1", n)
			}
			if r.TTL != tt.remaining1 || r.Rcode != tt.reply.Rcode || len(r.A) != len(tt.reply.A) {
				t.Fatalf("hit %+v, want the answer with TTL %d", r, tt.remaining1)
			}
			clk.advance(tt.keptFor - time.Second - time.Millisecond)
			ask(t, c, listedName)
			if n := f.count(listedName); n != 1 {
				t.Fatalf("asked again before the TTL ran out")
			}
			clk.advance(time.Millisecond)
			ask(t, c, listedName)
			if n := f.count(listedName); n != 2 {
				t.Fatalf("%d questions once the TTL ran out, want 2", n)
			}
		})
	}
}

func TestCacheErrorsNotKept(t *testing.T) {
	f := newFake()
	f.set(listedName, lookup.Reply{}, errors.New("dns: timeout"))
	c, _ := newTestCache(f, lookup.CacheOptions{MinTTL: time.Minute, MaxTTL: time.Hour})
	for range 3 {
		if _, err := c.LookupA(context.Background(), listedName); err == nil {
			t.Fatal("the error was lost")
		}
	}
	if n := f.count(listedName); n != 3 {
		t.Fatalf("%d questions, want 3: errors are not kept", n)
	}
}

func TestCacheEvictsLeastRecentlyUsed(t *testing.T) {
	f := newFake()
	c, _ := newTestCache(f, lookup.CacheOptions{Size: 2, MinTTL: time.Minute, MaxTTL: time.Hour})
	ask(t, c, "a.bl.test.")
	ask(t, c, "b.bl.test.")
	ask(t, c, "a.bl.test.") // a is now the most recent
	ask(t, c, "c.bl.test.") // b goes
	if st := c.Stats(); st.Entries != 2 {
		t.Fatalf("%d entries, want 2", st.Entries)
	}
	ask(t, c, "a.bl.test.")
	ask(t, c, "b.bl.test.")
	if f.count("a.bl.test.") != 1 || f.count("b.bl.test.") != 2 {
		t.Fatalf("a asked %d times, b %d; want 1 and 2", f.count("a.bl.test."), f.count("b.bl.test."))
	}
	st := c.Stats()
	if st.Hits != 2 || st.Misses != 4 {
		t.Fatalf("stats %+v, want 2 hits and 4 misses", st)
	}
}

func TestCacheNamesIgnoreCase(t *testing.T) {
	f := newFake()
	c, _ := newTestCache(f, lookup.CacheOptions{MinTTL: time.Minute, MaxTTL: time.Hour})
	ask(t, c, "A.BL.test")
	ask(t, c, "a.bl.test.")
	if n := f.count("a.bl.test."); n != 1 {
		t.Fatalf("%d questions, want 1", n)
	}
}

func TestCacheMergesQueriesInFlight(t *testing.T) {
	f := newFake()
	f.set(listedName, listedReply(60), nil)
	f.gate = make(chan struct{})
	c, _ := newTestCache(f, lookup.CacheOptions{MinTTL: time.Minute, MaxTTL: time.Hour})

	const n = 10
	var wg sync.WaitGroup
	results := make([]lookup.Reply, n)
	for i := range n {
		wg.Go(func() {
			r, err := c.LookupA(context.Background(), listedName)
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		})
	}
	waitFor(t, func() bool { return c.Stats().Misses == n })
	close(f.gate)
	wg.Wait()
	if got := f.count(listedName); got != 1 {
		t.Fatalf("%d questions for %d concurrent lookups, want 1", got, n)
	}
	for i, r := range results {
		if len(r.A) != 1 {
			t.Fatalf("lookup %d got %+v", i, r)
		}
	}
	if st := c.Stats(); st.Merged != n-1 {
		t.Fatalf("stats %+v, want %d merged", st, n-1)
	}
}

// TestCacheWaiterGivesUp: a caller whose context ends stops waiting at
// once; the query goes on while another caller waits, and is cancelled
// when the last one gives up.
func TestCacheWaiterGivesUp(t *testing.T) {
	f := newFake()
	f.set(listedName, listedReply(60), nil)
	f.gate = make(chan struct{})
	c, _ := newTestCache(f, lookup.CacheOptions{MinTTL: time.Minute, MaxTTL: time.Hour})

	patient := make(chan lookup.Reply, 1)
	go func() {
		r, _ := c.LookupA(context.Background(), listedName)
		patient <- r
	}()
	waitFor(t, func() bool { return c.Stats().Misses == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.LookupA(ctx, listedName)
	if !lookup.NoAnswer(err) {
		t.Fatalf("error %v, want no answer", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the impatient caller waited %v", d)
	}
	if f.cancelled.Load() != 0 {
		t.Fatal("the query was cancelled while a caller still waited")
	}
	close(f.gate)
	if r := <-patient; len(r.A) != 1 {
		t.Fatalf("the patient caller got %+v", r)
	}

	// Now a query whose only caller gives up is cancelled.
	f.mu.Lock()
	f.gate = make(chan struct{})
	f.mu.Unlock()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, err := c.LookupA(ctx2, "other.bl.test."); !lookup.NoAnswer(err) {
		t.Fatalf("error %v", err)
	}
	waitFor(t, func() bool { return f.cancelled.Load() == 1 })
}

func TestCacheWithoutCacheAsksEveryTime(t *testing.T) {
	f := newFake()
	f.set(listedName, listedReply(60), nil)
	c, _ := newTestCache(f, lookup.CacheOptions{MinTTL: time.Minute, MaxTTL: time.Hour})
	ask(t, c, listedName)
	ctx := lookup.WithoutCache(context.Background())
	for range 2 {
		if _, err := c.LookupA(ctx, listedName); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.count(listedName); n != 3 {
		t.Fatalf("%d questions, want 3", n)
	}
}

func TestCachePurgeZone(t *testing.T) {
	f := newFake()
	c, _ := newTestCache(f, lookup.CacheOptions{MinTTL: time.Minute, MaxTTL: time.Hour})
	ask(t, c, "1.bl.test.")
	ask(t, c, "2.bl.test.")
	ask(t, c, "1.other.test.")
	if n := c.PurgeZone("BL.test"); n != 2 {
		t.Fatalf("purged %d, want 2", n)
	}
	if st := c.Stats(); st.Entries != 1 {
		t.Fatalf("%d entries left, want 1", st.Entries)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}
