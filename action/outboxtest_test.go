package action

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// testOutbox runs the conformance tests every Outbox must pass. open
// returns a new, empty outbox; a second call in the same test may return
// another view of the same storage (another process on the same file or
// Redis), or a fresh one where there is no such thing.
func testOutbox(t *testing.T, open func(t *testing.T) Outbox) {
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	entry := func(id string, due time.Time) OutboxEntry {
		return OutboxEntry{ID: id, Target: "http://127.0.0.1:1/hook",
			Body: []byte(`{"account":"` + id + `"}`), Due: due, Created: t0}
	}

	t.Run("AddClaimDone", func(t *testing.T) {
		o := open(t)
		outboxAdd(t, o, entry("b", t0.Add(time.Second)))
		outboxAdd(t, o, entry("a", t0))
		outboxAdd(t, o, entry("later", t0.Add(time.Hour)))
		if n := outboxLen(t, o); n != 3 {
			t.Fatalf("Len = %d, want 3", n)
		}

		got := outboxClaim(t, o, t0.Add(time.Second), time.Minute, 10)
		if ids := outboxIDs(got); !slices.Equal(ids, []string{"a", "b"}) {
			t.Fatalf("claimed %v, want [a b]", ids)
		}
		e := got[0]
		if e.Target != "http://127.0.0.1:1/hook" || string(e.Body) != `{"account":"a"}` ||
			!e.Created.Equal(t0) || e.Attempts != 0 {
			t.Errorf("entry came back as %+v", e)
		}
		// Leased: not handed out again until the lease ends.
		if again := outboxClaim(t, o, t0.Add(30*time.Second), time.Minute, 10); len(again) != 0 {
			t.Fatalf("claimed %v again during the lease", outboxIDs(again))
		}
		after := outboxClaim(t, o, t0.Add(2*time.Minute), time.Minute, 10)
		if ids := outboxIDs(after); !slices.Equal(ids, []string{"a", "b"}) {
			t.Fatalf("after the lease claimed %v, want [a b]", ids)
		}

		if err := o.Done(ctx, "a"); err != nil {
			t.Fatalf("Done: %v", err)
		}
		if err := o.Done(ctx, "a"); err != nil {
			t.Fatalf("Done twice: %v", err)
		}
		if n := outboxLen(t, o); n != 2 {
			t.Fatalf("Len after Done = %d, want 2", n)
		}
	})

	t.Run("Limit", func(t *testing.T) {
		o := open(t)
		for i := range 5 {
			outboxAdd(t, o, entry(fmt.Sprint(i), t0.Add(time.Duration(i)*time.Second)))
		}
		got := outboxClaim(t, o, t0.Add(time.Hour), time.Minute, 2)
		if ids := outboxIDs(got); !slices.Equal(ids, []string{"0", "1"}) {
			t.Fatalf("claimed %v, want the two due first", ids)
		}
	})

	t.Run("Retry", func(t *testing.T) {
		o := open(t)
		outboxAdd(t, o, entry("a", t0))
		e := outboxClaim(t, o, t0, time.Minute, 1)[0]
		e.Attempts, e.Due, e.LastError = 1, t0.Add(5*time.Second), "HTTP 503"
		if err := o.Retry(ctx, e); err != nil {
			t.Fatalf("Retry: %v", err)
		}
		if got := outboxClaim(t, o, t0.Add(4*time.Second), time.Minute, 1); len(got) != 0 {
			t.Fatalf("claimed before its retry time")
		}
		got := outboxClaim(t, o, t0.Add(5*time.Second), time.Minute, 1)
		if len(got) != 1 || got[0].Attempts != 1 || got[0].LastError != "HTTP 503" {
			t.Fatalf("after Retry claimed %+v", got)
		}

		// Retry of an entry that is gone does not bring it back.
		if err := o.Done(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if err := o.Retry(ctx, e); err != nil {
			t.Fatalf("Retry of a finished entry: %v", err)
		}
		if n := outboxLen(t, o); n != 0 {
			t.Fatalf("Len = %d after Retry of a finished entry, want 0", n)
		}
	})

	t.Run("ConcurrentClaim", func(t *testing.T) {
		o := open(t)
		other := open(t)
		for i := range 20 {
			outboxAdd(t, o, entry(fmt.Sprint(i), t0))
		}
		var mu sync.Mutex
		seen := map[string]int{}
		var wg sync.WaitGroup
		for i := range 8 {
			box := o
			if i%2 == 1 {
				box = other
			}
			wg.Go(func() {
				for range 5 {
					got, err := box.Claim(ctx, t0, time.Hour, 2)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					for _, e := range got {
						seen[e.ID]++
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(seen) != 20 {
			t.Errorf("%d entries claimed, want 20", len(seen))
		}
		for id, n := range seen {
			if n != 1 {
				t.Errorf("entry %s claimed %d times", id, n)
			}
		}
	})
}

func outboxAdd(t *testing.T, o Outbox, e OutboxEntry) {
	t.Helper()
	if err := o.Add(context.Background(), e); err != nil {
		t.Fatalf("Add %s: %v", e.ID, err)
	}
}

func outboxClaim(t *testing.T, o Outbox, now time.Time, lease time.Duration,
	n int) []OutboxEntry {
	t.Helper()
	got, err := o.Claim(context.Background(), now, lease, n)
	if err != nil {
		t.Fatalf("Claim: %v", err)
	}
	return got
}

func outboxLen(t *testing.T, o Outbox) int {
	t.Helper()
	n, err := o.Len(context.Background())
	if err != nil {
		t.Fatalf("Len: %v", err)
	}
	return n
}

func outboxIDs(es []OutboxEntry) []string {
	ids := make([]string, len(es))
	for i, e := range es {
		ids[i] = e.ID
	}
	return ids
}

func TestMemOutboxConformance(t *testing.T) {
	testOutbox(t, func(t *testing.T) Outbox {
		// One process: a second view is the same outbox.
		return memOutboxFor(t)
	})
}

var memOutboxes sync.Map // test name -> *MemOutbox

func memOutboxFor(t *testing.T) *MemOutbox {
	o, _ := memOutboxes.LoadOrStore(t.Name(), NewMemOutbox())
	return o.(*MemOutbox)
}

func TestSQLiteOutboxConformance(t *testing.T) {
	paths := sync.Map{} // test name -> database path
	testOutbox(t, func(t *testing.T) Outbox {
		p, _ := paths.LoadOrStore(t.Name(), filepath.Join(t.TempDir(), "accounts.db"))
		return openTestSQLite(t, p.(string), nil).Outbox()
	})
}
