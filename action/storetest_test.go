package action

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// storeClock is a clock that moves only when told to.
type storeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newStoreClock() *storeClock {
	return &storeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *storeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *storeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testStore runs the conformance tests every Store implementation must
// pass. open returns a new, empty store that uses now as its clock; it
// should arrange for the store to be closed when the test ends.
func testStore(t *testing.T, open func(t *testing.T, now func() time.Time) Store) {
	ctx := context.Background()
	setup := func(t *testing.T) (Store, *storeClock) {
		t.Helper()
		clock := newStoreClock()
		return open(t, clock.Now), clock
	}
	detection := func(clock *storeClock, account string) Flag {
		now := clock.Now()
		return Flag{
			Account:   account,
			Reason:    "ip",
			List:      "local-authbl",
			ClientIP:  "192.0.2.7",
			QueueID:   "4Xyz1",
			FlaggedAt: now,
			LastSeen:  now,
		}
	}

	t.Run("GetUnknown", func(t *testing.T) {
		s, _ := setup(t)
		_, err := s.Get(ctx, "nobody@example.com")
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get unknown: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("PutNew", func(t *testing.T) {
		s, clock := setup(t)
		want := detection(clock, "alice@example.com")
		want.Reason = "recipient"
		want.Recipient = "dropbox@example.net"
		want.ExpiresAt = clock.Now().Add(24 * time.Hour)

		storePut(t, s, want, true)
		want.Hits = 1
		storeCheck(t, storeGet(t, s, "alice@example.com"), want)
	})

	t.Run("PutAgain", func(t *testing.T) {
		s, clock := setup(t)
		first := detection(clock, "alice@example.com")
		storePut(t, s, first, true)

		clock.Advance(time.Hour)
		second := Flag{
			Account:   "alice@example.com",
			Reason:    "recipient",
			List:      "other-list",
			ClientIP:  "198.51.100.9",
			Recipient: "dropbox@example.net",
			QueueID:   "5Abc2",
			FlaggedAt: clock.Now(),
			LastSeen:  clock.Now(),
			ExpiresAt: clock.Now().Add(time.Hour),
		}
		storePut(t, s, second, false)

		want := first
		want.Hits = 2
		want.LastSeen = second.LastSeen
		want.ExpiresAt = second.ExpiresAt
		storeCheck(t, storeGet(t, s, "alice@example.com"), want)
	})

	t.Run("CaseInsensitive", func(t *testing.T) {
		s, clock := setup(t)
		storePut(t, s, detection(clock, "User@Example.COM"), true)

		f := storeGet(t, s, "user@example.com")
		if f.Account != "user@example.com" {
			t.Errorf("Account = %q, want it lowercased", f.Account)
		}
		storeGet(t, s, "USER@EXAMPLE.COM")
		storePut(t, s, detection(clock, "user@EXAMPLE.com"), false)
		if err := s.Release(ctx, "uSeR@example.com"); err != nil {
			t.Fatalf("Release mixed case: %v", err)
		}
		storeAbsent(t, s, "user@example.com")
	})

	t.Run("Release", func(t *testing.T) {
		s, clock := setup(t)
		storePut(t, s, detection(clock, "alice@example.com"), true)
		storePut(t, s, detection(clock, "bob@example.com"), true)

		if err := s.Release(ctx, "alice@example.com"); err != nil {
			t.Fatalf("Release: %v", err)
		}
		storeAbsent(t, s, "alice@example.com")
		storeGet(t, s, "bob@example.com")
		if err := s.Release(ctx, "alice@example.com"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second Release: err = %v, want ErrNotFound", err)
		}
		// Released, the account is new again at its next detection.
		storePut(t, s, detection(clock, "alice@example.com"), true)
	})

	t.Run("ReleaseUnknown", func(t *testing.T) {
		s, _ := setup(t)
		err := s.Release(ctx, "nobody@example.com")
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Release unknown: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("List", func(t *testing.T) {
		s, clock := setup(t)
		flags, err := s.List(ctx)
		if err != nil || len(flags) != 0 {
			t.Fatalf("List of empty store = %v, %v; want nothing", flags, err)
		}

		// Written out of order: List sorts by FlaggedAt, not insertion.
		base := clock.Now()
		for _, a := range []struct {
			name string
			age  time.Duration
		}{
			{"middle@example.com", 2 * time.Hour},
			{"newest@example.com", time.Hour},
			{"oldest@example.com", 3 * time.Hour},
		} {
			f := detection(clock, a.name)
			f.FlaggedAt = base.Add(-a.age)
			f.LastSeen = f.FlaggedAt
			storePut(t, s, f, true)
		}
		storePut(t, s, detection(clock, "Newest@example.com"), false)

		flags, err = s.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		var got []string
		for _, f := range flags {
			got = append(got, f.Account)
		}
		want := []string{"oldest@example.com", "middle@example.com", "newest@example.com"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("List order = %v, want %v", got, want)
		}
		if flags[2].Hits != 2 {
			t.Errorf("List newest Hits = %d, want 2", flags[2].Hits)
		}
	})

	t.Run("Expiry", func(t *testing.T) {
		s, clock := setup(t)
		f := detection(clock, "alice@example.com")
		f.ExpiresAt = clock.Now().Add(time.Hour)
		storePut(t, s, f, true)
		forever := detection(clock, "bob@example.com")
		storePut(t, s, forever, true)

		clock.Advance(time.Hour - time.Second)
		storeGet(t, s, "alice@example.com")
		if n := storeCount(t, s); n != 2 {
			t.Fatalf("List before expiry: %d flags, want 2", n)
		}

		clock.Advance(time.Second) // ExpiresAt == now: expired
		storeAbsent(t, s, "alice@example.com")
		if n := storeCount(t, s); n != 1 {
			t.Fatalf("List after expiry: %d flags, want 1", n)
		}
		storeGet(t, s, "bob@example.com")

		// A new detection after expiry starts afresh.
		again := detection(clock, "alice@example.com")
		again.ClientIP = "198.51.100.9"
		storePut(t, s, again, true)
		again.Hits = 1
		storeCheck(t, storeGet(t, s, "alice@example.com"), again)
	})

	t.Run("ReleaseExpired", func(t *testing.T) {
		s, clock := setup(t)
		f := detection(clock, "alice@example.com")
		f.ExpiresAt = clock.Now().Add(time.Minute)
		storePut(t, s, f, true)

		clock.Advance(time.Hour)
		err := s.Release(ctx, "alice@example.com")
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("Release expired: err = %v, want ErrNotFound", err)
		}
	})

	t.Run("ConcurrentPut", func(t *testing.T) {
		s, clock := setup(t)
		// Several rounds, as one race is easily won by chance.
		for round := range 5 {
			account := fmt.Sprintf("Race%d@example.com", round)
			if news := storeRacePut(t, s, detection(clock, account), 20); news != 1 {
				t.Errorf("round %d: %d Puts saw isNew, want exactly 1", round, news)
			}
			if f := storeGet(t, s, account); f.Hits != 20 {
				t.Errorf("round %d: Hits = %d, want 20", round, f.Hits)
			}
		}
	})

	t.Run("CanceledContext", func(t *testing.T) {
		s, clock := setup(t)
		storePut(t, s, detection(clock, "alice@example.com"), true)
		canceled, cancel := context.WithCancel(ctx)
		cancel()

		if _, err := s.Get(canceled, "alice@example.com"); err == nil {
			t.Error("Get with canceled context succeeded")
		}
		if _, err := s.Put(canceled, detection(clock, "bob@example.com")); err == nil {
			t.Error("Put with canceled context succeeded")
		}
		if err := s.Release(canceled, "alice@example.com"); err == nil {
			t.Error("Release with canceled context succeeded")
		}
		if _, err := s.List(canceled); err == nil {
			t.Error("List with canceled context succeeded")
		}
		storeGet(t, s, "alice@example.com")
		storeAbsent(t, s, "bob@example.com")
	})
}

// storeRacePut puts f from n goroutines at once and returns how many saw isNew.
func storeRacePut(t *testing.T, s Store, f Flag, n int) int {
	t.Helper()
	var wg sync.WaitGroup
	var news atomic.Int32
	errs := make(chan error, n)
	start := make(chan struct{}) // closed to release them all together
	for range n {
		wg.Go(func() {
			<-start
			isNew, err := s.Put(context.Background(), f)
			if err != nil {
				errs <- err
			} else if isNew {
				news.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent Put: %v", err)
	}
	return int(news.Load())
}

func storePut(t *testing.T, s Store, f Flag, wantNew bool) {
	t.Helper()
	isNew, err := s.Put(context.Background(), f)
	if err != nil {
		t.Fatalf("Put %s: %v", f.Account, err)
	}
	if isNew != wantNew {
		t.Fatalf("Put %s: isNew = %v, want %v", f.Account, isNew, wantNew)
	}
}

func storeGet(t *testing.T, s Store, account string) Flag {
	t.Helper()
	f, err := s.Get(context.Background(), account)
	if err != nil {
		t.Fatalf("Get %s: %v", account, err)
	}
	return f
}

func storeAbsent(t *testing.T, s Store, account string) {
	t.Helper()
	f, err := s.Get(context.Background(), account)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get %s = %+v, %v; want ErrNotFound", account, f, err)
	}
}

func storeCount(t *testing.T, s Store) int {
	t.Helper()
	flags, err := s.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	return len(flags)
}

// storeCheck compares a stored flag with the one expected. The account
// is compared lowercased, times to the second, which is all the Store
// interface promises.
func storeCheck(t *testing.T, got, want Flag) {
	t.Helper()
	want.Account = strings.ToLower(want.Account)
	strs := [][3]string{
		{"Account", got.Account, want.Account},
		{"Reason", got.Reason, want.Reason},
		{"List", got.List, want.List},
		{"ClientIP", got.ClientIP, want.ClientIP},
		{"Recipient", got.Recipient, want.Recipient},
		{"QueueID", got.QueueID, want.QueueID},
	}
	for _, c := range strs {
		if c[1] != c[2] {
			t.Errorf("%s = %q, want %q", c[0], c[1], c[2])
		}
	}
	times := []struct {
		name      string
		got, want time.Time
	}{
		{"FlaggedAt", got.FlaggedAt, want.FlaggedAt},
		{"LastSeen", got.LastSeen, want.LastSeen},
		{"ExpiresAt", got.ExpiresAt, want.ExpiresAt},
	}
	for _, c := range times {
		if c.got.IsZero() != c.want.IsZero() ||
			!c.got.Truncate(time.Second).Equal(c.want.Truncate(time.Second)) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if got.Hits != want.Hits {
		t.Errorf("Hits = %d, want %d", got.Hits, want.Hits)
	}
}
