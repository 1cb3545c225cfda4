package action

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// flakyStore is a Store in memory that fails every call while down.
type flakyStore struct {
	mu    sync.Mutex
	down  bool
	flags map[string]Flag
	puts  int // Put calls, failed ones included
}

var errFlaky = errors.New("connection refused")

func (s *flakyStore) setDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

func (s *flakyStore) Get(ctx context.Context, account string) (Flag, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return Flag{}, errFlaky
	}
	f, ok := s.flags[account]
	if !ok {
		return Flag{}, ErrNotFound
	}
	return f, nil
}

func (s *flakyStore) Put(ctx context.Context, f Flag) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.puts++
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if s.down {
		return false, errFlaky
	}
	_, old := s.flags[f.Account]
	s.flags[f.Account] = f
	return !old, nil
}

func (s *flakyStore) Release(context.Context, string) error { return nil }
func (s *flakyStore) List(context.Context) ([]Flag, error)  { return nil, nil }
func (s *flakyStore) Close() error                          { return nil }

func (s *flakyStore) putCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.puts
}

// TestAccountsOutageLoggedOncePerInterval drives many failing calls
// through Accounts under a fake clock and counts the log lines.
func TestAccountsOutageLoggedOncePerInterval(t *testing.T) {
	ctx := context.Background()
	store := &flakyStore{flags: map[string]Flag{}}
	clock := newStoreClock()
	core, logs := observer.New(zapcore.DebugLevel)
	a := NewAccounts(store, AccountsOptions{Now: clock.Now, Log: zap.New(core),
		LogInterval: time.Minute})
	const (
		down  = "account store unavailable; detections are kept in memory and written when it is back"
		still = "account store still unavailable"
		back  = "account store available again"
	)

	store.setDown(true)
	for range 50 {
		if _, err := a.Lookup(ctx, "x@example.com"); !errors.Is(err, errFlaky) {
			t.Fatalf("Lookup: %v, want the store's error", err)
		}
		clock.Advance(time.Second)
	}
	if k := logs.FilterMessage(down).Len(); k != 1 {
		t.Fatalf("outage start logged %d times, want 1", k)
	}
	if k := logs.FilterMessage(still).Len(); k != 0 {
		t.Fatalf("\"still\" logged %d times within the first minute, want 0", k)
	}
	clock.Advance(20 * time.Second) // past the interval
	a.Lookup(ctx, "x@example.com")
	a.Lookup(ctx, "x@example.com")
	entries := logs.FilterMessage(still).All()
	if len(entries) != 1 {
		t.Fatalf("\"still\" logged %d times after the interval, want 1", len(entries))
	}
	if f := entries[0].ContextMap(); f["failures_since_last_report"] != int64(50) ||
		f["outage"] != 70*time.Second {
		t.Errorf("fields %v; want 50 failures over 70s", f)
	}

	// While down, Record does not wait for the store.
	putsBefore := store.putCalls()
	isNew, err := a.Record(ctx, Flag{Account: "mallory@example.com", Reason: ReasonIP})
	if !isNew || !errors.Is(err, ErrStoreDown) || !strings.Contains(err.Error(), errFlaky.Error()) {
		t.Fatalf("Record while down: %v, %v; want new, ErrStoreDown with the cause", isNew, err)
	}
	if store.putCalls() != putsBefore {
		t.Error("Record called the store while it was known to be down")
	}
	if f, err := a.Lookup(ctx, "Mallory@example.com"); err != nil || f == nil {
		t.Fatalf("Lookup of the waiting detection: %v, %v", f, err)
	}

	// Back: the flush writes the detection and ends the outage.
	store.setDown(false)
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if a.Pending() != 0 || a.StoreDown() {
		t.Fatalf("pending %d, down %v after the flush", a.Pending(), a.StoreDown())
	}
	if _, ok := store.flags["mallory@example.com"]; !ok {
		t.Fatal("the waiting detection was not written")
	}
	if k := logs.FilterMessage(back).Len(); k != 1 {
		t.Fatalf("recovery logged %d times, want 1", k)
	}

	// A new outage is logged again at once.
	store.setDown(true)
	a.Lookup(ctx, "x@example.com")
	if k := logs.FilterMessage(down).Len(); k != 2 {
		t.Fatalf("second outage: start logged %d times in all, want 2", k)
	}
}

// TestAccountsCanceledCallIsNoOutage: a caller that gives up says
// nothing about the store.
func TestAccountsCanceledCallIsNoOutage(t *testing.T) {
	store := &flakyStore{flags: map[string]Flag{}}
	a := NewAccounts(store, AccountsOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Record(ctx, Flag{Account: "a@example.com"}); err == nil {
		t.Fatal("Record with a canceled context succeeded")
	}
	if a.StoreDown() {
		t.Fatal("a canceled call marked the store down")
	}
}

// TestAccountsRunFlushes: Run writes what waits once the store is back.
func TestAccountsRunFlushes(t *testing.T) {
	store := &flakyStore{flags: map[string]Flag{}, down: true}
	a := NewAccounts(store, AccountsOptions{})
	if _, err := a.Record(context.Background(), Flag{Account: "a@example.com"}); err == nil {
		t.Fatal("Record succeeded on a store that is down")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		a.Run(ctx, 10*time.Millisecond)
		close(done)
	}()
	store.setDown(false)
	deadline := time.Now().Add(5 * time.Second)
	for a.Pending() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not write the waiting detection")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
}

// TestAccountsPeek: a detection waiting to be written is known at once;
// otherwise Peek knows only what a store that answers from memory knows.
func TestAccountsPeek(t *testing.T) {
	ctx := context.Background()
	flaky := &flakyStore{flags: map[string]Flag{}}
	a := NewAccounts(flaky, AccountsOptions{})
	if _, ok := a.Peek("hal@example.com"); ok {
		t.Fatal("Peek answered for a store that keeps nothing in memory")
	}
	flaky.setDown(true)
	if _, err := a.Record(ctx, Flag{Account: "Hal@example.com", Reason: "ip"}); err == nil {
		t.Fatal("Record succeeded with the store down")
	}
	if f, ok := a.Peek("hal@example.com"); !ok || f == nil || f.Reason != "ip" {
		t.Fatalf("Peek of a waiting detection: %+v, %v; want the flag", f, ok)
	}

	s := openMemoSQLite(t, filepath.Join(t.TempDir(), "accounts.db"), nil, time.Hour)
	a = NewAccounts(s, AccountsOptions{})
	if _, ok := a.Peek("ivy@example.com"); ok {
		t.Fatal("Peek answered before anything was read")
	}
	if f, err := a.Lookup(ctx, "ivy@example.com"); err != nil || f != nil {
		t.Fatalf("Lookup: %+v, %v; want not flagged", f, err)
	}
	if f, ok := a.Peek("IVY@example.com"); !ok || f != nil {
		t.Fatalf("Peek after a read: %+v, %v; want not flagged, known", f, ok)
	}
}
