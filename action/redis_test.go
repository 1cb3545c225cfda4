package action

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authbl-milter/authbl-milter/action/redistest"
)

// redisPrefixes numbers the prefixes of the tests that share one server.
var redisPrefixes atomic.Int64

func openTestRedis(t testing.TB, url, prefix string, now func() time.Time) *RedisStore {
	t.Helper()
	s, err := OpenRedis(url, RedisOptions{Prefix: prefix, Now: now})
	if err != nil {
		t.Fatalf("OpenRedis: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestRedisConformance runs the Store suite with one server and a prefix
// of its own for each test, which also proves that prefixes keep sites
// apart.
func TestRedisConformance(t *testing.T) {
	srv := redistest.Start(t)
	testStore(t, func(t *testing.T, now func() time.Time) Store {
		prefix := fmt.Sprintf("test%d:", redisPrefixes.Add(1))
		return openTestRedis(t, srv.URL(), prefix, now)
	})
}

func TestRedisOutboxConformance(t *testing.T) {
	srv := redistest.Start(t)
	prefixes := sync.Map{} // test name -> prefix: a second open shares it
	testOutbox(t, func(t *testing.T) Outbox {
		p, _ := prefixes.LoadOrStore(t.Name(), fmt.Sprintf("box%d:", redisPrefixes.Add(1)))
		return openTestRedis(t, srv.URL(), p.(string), nil).Outbox()
	})
}

// TestRedisTwoInstances checks what a cluster of milters relies on: a
// flag written through one client is seen and released through another,
// and of many Puts racing from both, exactly one sees isNew.
func TestRedisTwoInstances(t *testing.T) {
	srv := redistest.Start(t)
	a := openTestRedis(t, srv.URL(), "site:", nil)
	b := openTestRedis(t, srv.URL(), "site:", nil)
	other := openTestRedis(t, srv.URL(), "othersite:", nil)

	storePut(t, a, Flag{Account: "Alice@example.com", Reason: "ip", List: "authbl"}, true)
	if f := storeGet(t, b, "alice@example.com"); f.List != "authbl" || f.Hits != 1 {
		t.Errorf("b sees %+v", f)
	}
	storeAbsent(t, other, "alice@example.com")
	storePut(t, b, Flag{Account: "alice@example.com", Reason: "recipient"}, false)
	if err := b.Release(context.Background(), "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	storeAbsent(t, a, "alice@example.com")

	for round := range 5 {
		account := fmt.Sprintf("race%d@example.com", round)
		var news atomic.Int32
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 20 {
			s := a
			if i%2 == 1 {
				s = b
			}
			wg.Go(func() {
				<-start
				isNew, err := s.Put(context.Background(), Flag{Account: account, Reason: "ip"})
				if err != nil {
					t.Error(err)
				} else if isNew {
					news.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		if n := news.Load(); n != 1 {
			t.Errorf("round %d: %d Puts saw isNew, want 1", round, n)
		}
	}
}

// TestRedisExpiry checks that a flag with an expiry carries it as the
// key's Redis expiry, that a flag without one has none, and that Redis
// itself removes an expired flag.
func TestRedisExpiry(t *testing.T) {
	srv := redistest.Start(t)
	s := openTestRedis(t, srv.URL(), "ttl:", nil)
	ctx := context.Background()
	pttl := func(account string) time.Duration {
		t.Helper()
		d, err := s.rdb.PTTL(ctx, s.flagKey(account)).Result()
		if err != nil {
			t.Fatal(err)
		}
		return d
	}

	now := time.Now()
	storePut(t, s, Flag{Account: "day@example.com", ExpiresAt: now.Add(24 * time.Hour)}, true)
	if d := pttl("day@example.com"); d <= 23*time.Hour || d > 24*time.Hour {
		t.Errorf("PTTL = %v, want just under 24h", d)
	}
	storePut(t, s, Flag{Account: "forever@example.com"}, true)
	if d := pttl("forever@example.com"); d != -1 {
		t.Errorf("PTTL of a flag until released = %v, want -1 (no expiry)", d)
	}

	// A later detection pushes the expiry out, or removes it.
	storePut(t, s, Flag{Account: "forever@example.com", ExpiresAt: now.Add(time.Hour)}, false)
	if d := pttl("forever@example.com"); d <= 59*time.Minute || d > time.Hour {
		t.Errorf("PTTL after a detection with a TTL = %v, want just under 1h", d)
	}
	storePut(t, s, Flag{Account: "forever@example.com"}, false)
	if d := pttl("forever@example.com"); d != -1 {
		t.Errorf("PTTL after a detection without TTL = %v, want -1", d)
	}

	// Redis removes the key by itself once the expiry has passed.
	storePut(t, s, Flag{Account: "short@example.com",
		ExpiresAt: time.Now().Add(50 * time.Millisecond)}, true)
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := s.rdb.Exists(ctx, s.flagKey("short@example.com")).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Redis kept the expired flag")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// An expiry already past: nothing is kept, though the Put was new.
	storePut(t, s, Flag{Account: "past@example.com", ExpiresAt: now.Add(-time.Second)}, true)
	storeAbsent(t, s, "past@example.com")
}

// TestRedisListScan lists more flags than one SCAN step returns, under a
// prefix full of glob characters, beside keys of another prefix that the
// glob would match if it were not escaped.
func TestRedisListScan(t *testing.T) {
	srv := redistest.Start(t)
	const n = redisScanCount*2 + 17
	s := openTestRedis(t, srv.URL(), "s[1]*?:", nil)
	decoy := openTestRedis(t, srv.URL(), "s1xx:", nil)
	ctx := context.Background()

	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	p := s.rdb.Pipeline()
	for i := range n {
		f := Flag{Account: fmt.Sprintf("user%04d@example.com", i), Reason: "ip",
			FlaggedAt: base.Add(time.Duration(n-i) * time.Second)}
		redisPut.Eval(ctx, p, []string{s.flagKey(f.Account)}, redisTime(base), 0,
			redisTime(f.FlaggedAt), "account", f.Account, "reason", "ip", "list", "",
			"client_ip", "", "recipient", "", "queue_id", "",
			"flagged_at", redisTime(f.FlaggedAt), "last_seen", redisTime(f.FlaggedAt),
			"hits", 1, "expires_at", 0)
	}
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	storePut(t, decoy, Flag{Account: "decoy@example.com"}, true)

	flags, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(flags) != n {
		t.Fatalf("List returned %d flags, want %d", len(flags), n)
	}
	// Oldest first: the last account was flagged first.
	if flags[0].Account != fmt.Sprintf("user%04d@example.com", n-1) ||
		flags[n-1].Account != "user0000@example.com" {
		t.Errorf("order: first %s, last %s", flags[0].Account, flags[n-1].Account)
	}
	if !slices.IsSortedFunc(flags, func(a, b Flag) int { return a.FlaggedAt.Compare(b.FlaggedAt) }) {
		t.Error("List is not oldest first")
	}
	if got, err := decoy.List(ctx); err != nil || len(got) != 1 {
		t.Errorf("decoy List = %d flags, %v; want 1", len(got), err)
	}
}

func TestRedisForeignKey(t *testing.T) {
	srv := redistest.Start(t)
	s := openTestRedis(t, srv.URL(), "f:", nil)
	ctx := context.Background()
	if err := s.rdb.Set(ctx, s.flagKey("str@example.com"), "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "str@example.com"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("Get of a string key: %v, want an error", err)
	}
	if _, err := s.Put(ctx, Flag{Account: "str@example.com"}); err == nil {
		t.Error("Put over a string key succeeded")
	}
	if err := s.rdb.HSet(ctx, s.flagKey("odd@example.com"), "hits", "many").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "odd@example.com"); err == nil ||
		!strings.Contains(err.Error(), "not a flag") {
		t.Errorf("Get of a foreign hash: %v, want \"not a flag\"", err)
	}
}

func TestRedisOpenErrors(t *testing.T) {
	for _, url := range []string{"", "http://example.test", "redis://:secretpw@[::1", "unix://"} {
		s, err := OpenRedis(url, RedisOptions{})
		if err == nil {
			s.Close()
			t.Errorf("OpenRedis(%q) succeeded", url)
			continue
		}
		if strings.Contains(err.Error(), "secretpw") {
			t.Errorf("error quotes the password: %v", err)
		}
	}
}

// TestRedisDown checks that a store whose Redis is gone fails at once
// and within the context, and works again when Redis is back.
func TestRedisDown(t *testing.T) {
	srv := redistest.Start(t)
	s := openTestRedis(t, srv.URL(), "down:", nil)
	storePut(t, s, Flag{Account: "a@example.com"}, true)

	srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := s.Get(ctx, "a@example.com"); err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("Get with Redis down: %v, want a failure", err)
	}
	if _, err := s.Put(ctx, Flag{Account: "b@example.com"}); err == nil {
		t.Fatal("Put with Redis down succeeded")
	}
	if ctx.Err() != nil {
		t.Fatal("the calls used up the whole context")
	}

	srv.Restart() // empty: nothing was persisted
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := s.Put(context.Background(), Flag{Account: "b@example.com"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still failing after Redis came back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	storeGet(t, s, "b@example.com")
}

func BenchmarkRedisGet(b *testing.B) {
	srv := redistest.Start(b)
	s := openTestRedis(b, srv.URL(), "bench:", nil)
	ctx := context.Background()
	for i := range 100 {
		if _, err := s.Put(ctx, Flag{Account: fmt.Sprintf("user%d@example.com", i)}); err != nil {
			b.Fatal(err)
		}
	}
	i := 0
	for b.Loop() {
		account := fmt.Sprintf("user%d@example.com", i%200)
		if _, err := s.Get(ctx, account); err != nil && !errors.Is(err, ErrNotFound) {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkRedisPut(b *testing.B) {
	srv := redistest.Start(b)
	s := openTestRedis(b, srv.URL(), "bench:", nil)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		if _, err := s.Put(ctx, Flag{Account: fmt.Sprintf("user%d@example.com", i%100)}); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
