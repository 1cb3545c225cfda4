package action

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

func openMemoSQLite(t testing.TB, path string, now func() time.Time, every time.Duration) *SQLiteStore {
	t.Helper()
	return openSQLiteWith(t, path, SQLiteOptions{Now: now, ChangeCheck: every})
}

// TestSQLiteConformanceWithMemory: the store keeps every promise of the
// interface while it answers reads from memory.
func TestSQLiteConformanceWithMemory(t *testing.T) {
	testStore(t, func(t *testing.T, now func() time.Time) Store {
		return openMemoSQLite(t, filepath.Join(t.TempDir(), "accounts.db"), now, 10*time.Millisecond)
	})
}

// peeked reports whether s answers account from memory, and what.
func peeked(s *SQLiteStore, account string) (found, ok bool) {
	_, found, ok = s.Peek(account)
	return found, ok
}

// eventually polls cond until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s: not within 10 s", what)
}

// TestSQLiteMemorySeesOtherProcess: reads are answered from memory, and
// a release and a flag made by another process (the accounts command)
// reach the daemon once the change check has seen them.
func TestSQLiteMemorySeesOtherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "accounts.db")
	daemon := openMemoSQLite(t, path, nil, 20*time.Millisecond)
	storePut(t, daemon, Flag{Account: "alice@example.com", Reason: "ip"}, true)
	if _, ok := peeked(daemon, "alice@example.com"); ok {
		t.Fatal("a flag written by this store answered from memory before it was read")
	}
	storeGet(t, daemon, "Alice@example.com")
	storeAbsent(t, daemon, "carol@example.com")
	if found, ok := peeked(daemon, "alice@example.com"); !ok || !found {
		t.Fatalf("alice after a read: found %v, from memory %v; want a flag from memory", found, ok)
	}
	if found, ok := peeked(daemon, "carol@example.com"); !ok || found {
		t.Fatalf("carol after a read: found %v, from memory %v; want not flagged, from memory", found, ok)
	}

	// The helper releases alice and flags carol, in a process of its own.
	cmd := exec.Command(os.Args[0], "-test.run=^TestSQLiteHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "AUTHBL_SQLITE_HELPER="+path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper process: %v\n%s", err, out)
	}
	eventually(t, "the other process's changes seen", func() bool {
		_, errA := daemon.Get(context.Background(), "alice@example.com")
		_, errC := daemon.Get(context.Background(), "carol@example.com")
		return errors.Is(errA, ErrNotFound) && errC == nil
	})
	if found, ok := peeked(daemon, "carol@example.com"); !ok || !found {
		t.Fatalf("carol read again: found %v, from memory %v; want a flag from memory", found, ok)
	}
}

// TestSQLiteMemoryOwnWritesAtOnce: a write through the store itself is
// seen by the next read, whatever the change check's interval.
func TestSQLiteMemoryOwnWritesAtOnce(t *testing.T) {
	ctx := context.Background()
	s := openMemoSQLite(t, filepath.Join(t.TempDir(), "accounts.db"), nil, time.Hour)
	storeAbsent(t, s, "bob@example.com")
	storePut(t, s, Flag{Account: "bob@example.com", Reason: "ip"}, true)
	storeGet(t, s, "bob@example.com")
	storePut(t, s, Flag{Account: "BOB@example.com", Reason: "ip"}, false)
	if f := storeGet(t, s, "bob@example.com"); f.Hits != 2 {
		t.Fatalf("hits %d after two detections, want 2", f.Hits)
	}
	if err := s.Release(ctx, "bob@example.com"); err != nil {
		t.Fatal(err)
	}
	storeAbsent(t, s, "bob@example.com")
}

// TestSQLiteMemoryExpiry: a flag read into memory expires there when
// its time comes, as it does in the database.
func TestSQLiteMemoryExpiry(t *testing.T) {
	clock := newStoreClock()
	s := openMemoSQLite(t, filepath.Join(t.TempDir(), "accounts.db"), clock.Now, time.Hour)
	storePut(t, s, Flag{Account: "erin@example.com", Reason: "ip",
		ExpiresAt: clock.Now().Add(time.Minute)}, true)
	storeGet(t, s, "erin@example.com")
	clock.Advance(time.Minute)
	if found, ok := peeked(s, "erin@example.com"); !ok || found {
		t.Fatalf("expired flag from memory: found %v, ok %v; want not flagged", found, ok)
	}
	storeAbsent(t, s, "erin@example.com")
}

// TestSQLiteMemoryOffWhileCheckBlocked: while the change check cannot be
// made (here a write holds the connection it asks), reads go to the
// database instead of memory; afterwards memory serves again.
func TestSQLiteMemoryOffWhileCheckBlocked(t *testing.T) {
	ctx := context.Background()
	s := openMemoSQLite(t, filepath.Join(t.TempDir(), "accounts.db"), nil, 10*time.Millisecond)
	storeAbsent(t, s, "frank@example.com")
	if _, ok := peeked(s, "frank@example.com"); !ok {
		t.Fatal("not answered from memory after a read")
	}
	if err := s.lockWrite(ctx); err != nil { // as a long write would
		t.Fatal(err)
	}
	eventually(t, "memory off while the check is blocked", func() bool {
		_, ok := peeked(s, "frank@example.com")
		return !ok
	})
	storeAbsent(t, s, "frank@example.com")
	if _, ok := peeked(s, "frank@example.com"); ok {
		t.Fatal("a read was kept while the check is blocked")
	}
	s.unlockWrite()
	eventually(t, "memory back after the check", func() bool {
		storeAbsent(t, s, "frank@example.com")
		_, ok := peeked(s, "frank@example.com")
		return ok
	})
}

// TestSQLiteMemoryReplacesBrokenConnection: when the connection the check
// asks breaks, the store takes another, writes work again, and changes by
// another process are still seen.
func TestSQLiteMemoryReplacesBrokenConnection(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "accounts.db")
	s := openMemoSQLite(t, path, nil, 10*time.Millisecond)
	if err := s.lockWrite(ctx); err != nil {
		t.Fatal(err)
	}
	broken := s.watch
	broken.Close()
	s.unlockWrite()

	eventually(t, "a new connection", func() bool {
		if err := s.lockWrite(ctx); err != nil {
			t.Fatal(err)
		}
		defer s.unlockWrite()
		return s.watch != nil && s.watch != broken
	})
	storePut(t, s, Flag{Account: "ida@example.com", Reason: "ip"}, true)
	storeGet(t, s, "ida@example.com")
	storeAbsent(t, s, "jo@example.com")
	eventually(t, "memory on again", func() bool {
		storeAbsent(t, s, "jo@example.com")
		_, ok := peeked(s, "jo@example.com")
		return ok
	})

	other := openTestSQLite(t, path, nil)
	storePut(t, other, Flag{Account: "jo@example.com", Reason: "manual"}, true)
	eventually(t, "another connection's flag seen", func() bool {
		_, err := s.Get(ctx, "jo@example.com")
		return err == nil
	})
}

// TestSQLiteMemoryOwnWritesKeepOthers: the store's own writes do not
// make the change check forget what it knows of other accounts.
func TestSQLiteMemoryOwnWritesKeepOthers(t *testing.T) {
	const every = 30 * time.Millisecond
	s := openMemoSQLite(t, filepath.Join(t.TempDir(), "accounts.db"), nil, every)
	storeAbsent(t, s, "kim@example.com")
	for i := range 3 {
		storePut(t, s, Flag{Account: "lee@example.com", Reason: "ip"}, i == 0)
		time.Sleep(every + 10*time.Millisecond) // past a check
	}
	if _, ok := peeked(s, "kim@example.com"); !ok {
		t.Fatal("the store's own writes dropped what it knew of another account")
	}
}

// TestFlagMemoKeepsNoReadOlderThanADrop: a read that started before a
// drop is not kept after it, so a value read before a change cannot
// outlive the change.
func TestFlagMemoKeepsNoReadOlderThanADrop(t *testing.T) {
	m := &flagMemo{flags: make(map[string]memoEntry)}
	m.setOn(true)
	gen := m.generation()
	m.drop() // a write commits while the read runs
	m.keep(gen, "gina@example.com", Flag{}, false)
	if _, _, ok := m.lookup("gina@example.com", time.Now()); ok {
		t.Fatal("a read older than the drop was kept")
	}
	m.keep(m.generation(), "gina@example.com", Flag{}, false)
	if _, found, ok := m.lookup("gina@example.com", time.Now()); !ok || found {
		t.Fatal("a read after the drop was not kept")
	}
}

// TestFlagMemoForgetsOnlyTheAccountWritten: a write through the store
// forgets the account it wrote, and no read that ran across it is kept,
// while what is known of other accounts stays.
func TestFlagMemoForgetsOnlyTheAccountWritten(t *testing.T) {
	m := &flagMemo{flags: make(map[string]memoEntry)}
	m.setOn(true)
	m.keep(m.generation(), "other@example.com", Flag{}, false)
	m.keep(m.generation(), "hank@example.com", Flag{}, false)
	gen := m.generation()
	m.forget("hank@example.com")
	m.keep(gen, "hank@example.com", Flag{}, false) // a read from before the write
	if _, _, ok := m.lookup("hank@example.com", time.Now()); ok {
		t.Fatal("the written account is still known")
	}
	if _, _, ok := m.lookup("other@example.com", time.Now()); !ok {
		t.Fatal("a write of one account forgot another")
	}
}

// TestSQLiteMemoryWritesAfterACancelledPut: a Put whose context ends
// in the middle of its transaction leaves the connection this store
// writes on free only once that transaction is rolled back. database/sql
// rolls it back on a goroutine of its own when the context ends; the
// next write must not run before that, inside the transaction that is
// about to be undone: an outbox entry would be reported written and
// then lost, a Put would fail. The Put's context is ended at varying
// moments until one lands inside its transaction; each write that
// follows is checked in the database at once.
func TestSQLiteMemoryWritesAfterACancelledPut(t *testing.T) {
	bg := context.Background()
	s := openMemoSQLite(t, filepath.Join(t.TempDir(), "accounts.db"), nil, 10*time.Millisecond)
	outbox := s.Outbox()
	for i := range 1000 {
		ctx, cancel := context.WithCancel(bg)
		stop := time.AfterFunc(time.Duration(i%150)*time.Microsecond, cancel)
		s.Put(ctx, Flag{Account: fmt.Sprintf("cut%d@example.com", i), Reason: "ip"})
		stop.Stop()
		cancel()

		id := fmt.Sprintf("entry%d", i)
		if err := outbox.Add(bg, OutboxEntry{ID: id, Target: "t"}); err != nil {
			t.Fatalf("round %d: outbox add after a cancelled put: %v", i, err)
		}
		if n, err := outbox.Len(bg); err != nil || n != i+1 {
			t.Fatalf("round %d: outbox holds %d entries (%v) after an add that succeeded, want %d",
				i, n, err, i+1)
		}
		account := fmt.Sprintf("kept%d@example.com", i)
		if _, err := s.Put(bg, Flag{Account: account, Reason: "ip"}); err != nil {
			t.Fatalf("round %d: put after a cancelled put: %v", i, err)
		}
	}
}

// TestSQLiteMemoryStaleNoLongerThanOneCheckWhileAWriteWaits: a change
// committed by another process takes effect within ChangeCheck, also
// while a write of this store holds the connection the check asks. The
// check then cannot be made, and memory must be off from that check on;
// here the check instead waits a whole further interval for the
// connection with memory still on, so a release made just after a check
// is not seen for almost two intervals. The test finds the moment of a
// check (the one that drops what another connection's commit made
// stale), then holds the connection as a long write would.
func TestSQLiteMemoryStaleNoLongerThanOneCheckWhileAWriteWaits(t *testing.T) {
	const every = 200 * time.Millisecond
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "accounts.db")
	s := openMemoSQLite(t, path, nil, every)
	other := openTestSQLite(t, path, nil)
	storePut(t, other, Flag{Account: "alice@example.com", Reason: "manual"}, true)
	storeGet(t, s, "alice@example.com")

	// Another connection's commit is dropped at the next check.
	storePut(t, other, Flag{Account: "tick@example.com", Reason: "manual"}, true)
	for deadline := time.Now().Add(10 * time.Second); ; runtime.Gosched() {
		if _, ok := peeked(s, "alice@example.com"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no change check within 10 s")
		}
	}
	if err := s.lockWrite(ctx); err != nil { // a write that takes long
		t.Fatal(err)
	}
	defer s.unlockWrite()
	storeGet(t, s, "alice@example.com")
	if found, ok := peeked(s, "alice@example.com"); !ok || !found {
		t.Fatalf("alice read again: found %v, from memory %v; want a flag from memory", found, ok)
	}

	if err := other.Release(ctx, "alice@example.com"); err != nil {
		t.Fatal(err)
	}
	released := time.Now()
	time.Sleep(every + every/2) // past the bound under test, with room for a busy machine
	if found, ok := peeked(s, "alice@example.com"); ok && found {
		t.Fatalf("alice still flagged from memory %v after another connection released her,"+
			" with a change check every %v", time.Since(released).Round(time.Millisecond), every)
	}
}
