package action

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func openTestSQLite(t testing.TB, path string, now func() time.Time) *SQLiteStore {
	t.Helper()
	return openSQLiteWith(t, path, SQLiteOptions{Now: now})
}

// openSQLiteWith opens the store at path, closed when the test ends.
func openSQLiteWith(t testing.TB, path string, o SQLiteOptions) *SQLiteStore {
	t.Helper()
	s, err := OpenSQLite(path, o)
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSQLiteConformance(t *testing.T) {
	testStore(t, func(t *testing.T, now func() time.Time) Store {
		return openTestSQLite(t, filepath.Join(t.TempDir(), "accounts.db"), now)
	})
}

// TestSQLiteSecondProcess opens the file twice, as the daemon and the
// accounts subcommand do, and checks that each sees the other's writes.
func TestSQLiteSecondProcess(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "accounts.db")
	daemon := openTestSQLite(t, path, nil)
	storePut(t, daemon, Flag{Account: "alice@example.com", Reason: "ip"}, true)

	cli := openTestSQLite(t, path, nil)
	if f := storeGet(t, cli, "alice@example.com"); f.Reason != "ip" {
		t.Errorf("CLI sees Reason %q, want ip", f.Reason)
	}
	if err := cli.Release(ctx, "alice@example.com"); err != nil {
		t.Fatalf("CLI Release: %v", err)
	}
	storeAbsent(t, daemon, "alice@example.com")

	storePut(t, cli, Flag{Account: "bob@example.com", Reason: "manual"}, true)
	storePut(t, daemon, Flag{Account: "bob@example.com", Reason: "ip"}, false)
	if f := storeGet(t, cli, "bob@example.com"); f.Hits != 2 || f.Reason != "manual" {
		t.Errorf("bob = %+v, want Hits 2, Reason manual", f)
	}
	if err := cli.Close(); err != nil {
		t.Fatalf("CLI Close: %v", err)
	}
	storeGet(t, daemon, "bob@example.com")
}

// TestSQLiteOtherProcess runs the accounts subcommand's part in a
// process of its own, this test binary run again, while this process
// keeps the store open.
func TestSQLiteOtherProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "accounts.db")
	daemon := openTestSQLite(t, path, nil)
	storePut(t, daemon, Flag{Account: "alice@example.com", Reason: "ip"}, true)

	cmd := exec.Command(os.Args[0], "-test.run=^TestSQLiteHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "AUTHBL_SQLITE_HELPER="+path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper process: %v\n%s", err, out)
	}

	storeAbsent(t, daemon, "alice@example.com")
	if f := storeGet(t, daemon, "carol@example.com"); f.Reason != "manual" {
		t.Errorf("carol = %+v, want Reason manual", f)
	}
}

// TestSQLiteHelperProcess is the other process of TestSQLiteOtherProcess;
// on its own it does nothing.
func TestSQLiteHelperProcess(t *testing.T) {
	path := os.Getenv("AUTHBL_SQLITE_HELPER")
	if path == "" {
		return
	}
	ctx := context.Background()
	cli := openTestSQLite(t, path, nil)
	storeGet(t, cli, "Alice@example.com")
	if err := cli.Release(ctx, "alice@example.com"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	storePut(t, cli, Flag{Account: "carol@example.com", Reason: "manual"}, true)
}

// TestSQLiteBusyWait checks that a writer waits for a lock that another
// connection holds for a while, instead of failing with SQLITE_BUSY.
func TestSQLiteBusyWait(t *testing.T) {
	path := filepath.Join(t.TempDir(), "accounts.db")
	holder := openTestSQLite(t, path, nil)
	waiter := openTestSQLite(t, path, nil)

	tx, err := holder.db.Begin() // immediate: takes the write lock now
	if err != nil {
		t.Fatal(err)
	}
	const hold = 300 * time.Millisecond
	go func() {
		time.Sleep(hold)
		tx.Rollback()
	}()

	start := time.Now()
	storePut(t, waiter, Flag{Account: "alice@example.com", Reason: "ip"}, true)
	if waited := time.Since(start); waited < hold/2 {
		t.Errorf("Put returned after %v, before the lock was let go", waited)
	}
}

func TestSQLiteReopen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "var", "lib", "authbl-milter")
	path := filepath.Join(dir, "accounts.db")
	at := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.FixedZone("CET", 3600))
	want := Flag{
		Account: "alice@example.com", Reason: "recipient", List: "rcpt",
		ClientIP: "2001:db8::7", Recipient: "dropbox@example.net", QueueID: "4Xyz1",
		FlaggedAt: at, LastSeen: at.Add(time.Minute), Hits: 1,
	}

	s, err := OpenSQLite(path, SQLiteOptions{})
	if err != nil {
		t.Fatalf("OpenSQLite: %v", err)
	}
	storePut(t, s, want, true)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openTestSQLite(t, path, nil)
	got := storeGet(t, s, "alice@example.com")
	storeCheck(t, got, want)
	// SQLite keeps nanoseconds; the location comes back as UTC.
	if !got.FlaggedAt.Equal(at) || got.FlaggedAt.Location() != time.UTC {
		t.Errorf("FlaggedAt = %v, want %v in UTC", got.FlaggedAt, at)
	}
	if !got.ExpiresAt.IsZero() {
		t.Errorf("ExpiresAt = %v, want zero", got.ExpiresAt)
	}

	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o750 {
		t.Errorf("directory: %v, %v; want mode 0750", fi.Mode(), err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("database: %v, %v; want mode 0640", fi.Mode(), err)
	}
	var version int
	var mode string
	s.db.QueryRow("PRAGMA user_version").Scan(&version)
	s.db.QueryRow("PRAGMA journal_mode").Scan(&mode)
	if version != sqliteSchemaVersion || mode != "wal" {
		t.Errorf("user_version %d, journal_mode %q; want %d, wal",
			version, mode, sqliteSchemaVersion)
	}
	if err := s.Ping(context.Background()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

// TestSQLiteMigrateFromVersion1 opens a database written before the
// outbox existed: its flags stay, and the outbox works.
func TestSQLiteMigrateFromVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "accounts.db")
	db, err := sql.Open("sqlite", sqliteDSN(path, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(sqliteSchema + "PRAGMA user_version = 1;"); err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(`INSERT INTO flags (` + sqliteColumns + `)
		VALUES ('old@example.com', 'ip', 'authbl', '192.0.2.7', '', 'Q1', 1, 1, 3, 0)`)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()

	s := openTestSQLite(t, path, nil)
	if f := storeGet(t, s, "old@example.com"); f.Hits != 3 || f.List != "authbl" {
		t.Errorf("flag after the migration: %+v", f)
	}
	var version int
	s.db.QueryRow("PRAGMA user_version").Scan(&version)
	if version != sqliteSchemaVersion {
		t.Errorf("user_version %d, want %d", version, sqliteSchemaVersion)
	}
	err = s.Outbox().Add(context.Background(),
		OutboxEntry{ID: "x", Target: "http://h/", Due: time.Now()})
	if err != nil {
		t.Fatalf("outbox after the migration: %v", err)
	}
}

// TestSQLiteOddPath checks that a path with URI-special characters is
// opened as it is spelled, not cut at the '?' or '#'.
func TestSQLiteOddPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a dir %41 #x")
	path := filepath.Join(dir, "acc?ounts.db")
	s := openTestSQLite(t, path, nil)
	storePut(t, s, Flag{Account: "alice@example.com"}, true)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("database not at its path: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "acc?ounts.db") {
			t.Errorf("stray file %q beside the database", e.Name())
		}
	}
}

func TestSQLiteOpenErrors(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := make([]byte, 8192)
	for i := range garbage {
		garbage[i] = byte(i*7 + 3)
	}
	newer := filepath.Join(dir, "newer.db")
	s := openTestSQLite(t, newer, nil)
	if _, err := s.db.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	foreign := filepath.Join(dir, "foreign.db")
	s = openTestSQLite(t, foreign, nil)
	if _, err := s.db.Exec("PRAGMA user_version = 0; CREATE TABLE other (x)"); err != nil {
		t.Fatal(err)
	}
	s.Close()

	for _, tc := range []struct {
		name    string
		path    string
		content []byte // written to path first, when not nil
		want    string // in the error
	}{
		{"UnderRegularFile", filepath.Join(regular, "sub", "accounts.db"), nil,
			"not a directory"},
		{"Directory", dir, nil, "is a directory"},
		{"Empty", "", nil, "empty path"},
		{"Garbage", filepath.Join(dir, "garbage.db"), garbage, "not a database"},
		{"ShortGarbage", filepath.Join(dir, "short.db"), []byte("hello, world\n"),
			"not a database"},
		{"NewerSchema", newer, nil, "schema version 99 is newer"},
		{"ForeignDatabase", foreign, nil, "not an account store"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.content != nil {
				if err := os.WriteFile(tc.path, tc.content, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			s, err := OpenSQLite(tc.path, SQLiteOptions{})
			if err == nil {
				s.Close()
				t.Fatalf("OpenSQLite(%q) succeeded", tc.path)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "sqlite store: open") || !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, want one starting \"sqlite store: open\" with %q",
					msg, tc.want)
			}
		})
	}
}

func TestSQLiteBadInput(t *testing.T) {
	s := openTestSQLite(t, filepath.Join(t.TempDir(), "accounts.db"), nil)
	if _, err := s.Put(context.Background(), Flag{Reason: "ip"}); err == nil {
		t.Error("Put of an empty account succeeded")
	}

	// Missing times are filled in from the clock.
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return at }
	storePut(t, s, Flag{Account: "alice@example.com"}, true)
	if f := storeGet(t, s, "alice@example.com"); !f.FlaggedAt.Equal(at) || !f.LastSeen.Equal(at) {
		t.Errorf("times = %v, %v; want both %v", f.FlaggedAt, f.LastSeen, at)
	}

	s.Close()
	if _, err := s.Get(context.Background(), "alice@example.com"); err == nil ||
		errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Close: err = %v, want a failure", err)
	}
}

func benchSQLiteStore(b *testing.B, n int) *SQLiteStore {
	s := openTestSQLite(b, filepath.Join(b.TempDir(), "accounts.db"), nil)
	for i := range n {
		f := Flag{Account: fmt.Sprintf("user%d@example.com", i), Reason: "ip"}
		if _, err := s.Put(context.Background(), f); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// BenchmarkSQLiteGet reads flags, half of them missing as most logins are
// not flagged; "deadline" reads with a context that has one, as the
// milter's reads do; "memory" reads through a store opened as serve opens
// it, after every account has been read once.
func BenchmarkSQLiteGet(b *testing.B) {
	const n = 1000
	s := benchSQLiteStore(b, n)
	mem := openMemoSQLite(b, s.Path(), nil, SQLiteChangeCheck)
	for i := range 2 * n {
		mem.Get(context.Background(), fmt.Sprintf("user%d@example.com", i))
	}
	background := func() (context.Context, context.CancelFunc) {
		return context.Background(), func() {}
	}
	for _, tc := range []struct {
		name  string
		store *SQLiteStore
		ctx   func() (context.Context, context.CancelFunc)
	}{
		{"background", s, background},
		{"deadline", s, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), time.Minute)
		}},
		{"memory", mem, background},
	} {
		s := tc.store
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				account := fmt.Sprintf("user%d@example.com", i%(2*n))
				ctx, cancel := tc.ctx()
				if _, err := s.Get(ctx, account); err != nil && !errors.Is(err, ErrNotFound) {
					b.Fatal(err)
				}
				cancel()
				i++
			}
		})
	}
}

func BenchmarkSQLitePut(b *testing.B) {
	for _, tc := range []struct {
		name  string
		again bool
	}{{"New", false}, {"Again", true}} {
		b.Run(tc.name, func(b *testing.B) {
			s := benchSQLiteStore(b, 100)
			ctx := context.Background()
			i := 0
			for b.Loop() {
				account := fmt.Sprintf("new%d@example.com", i)
				if tc.again {
					account = fmt.Sprintf("user%d@example.com", i%100)
				}
				if _, err := s.Put(ctx, Flag{Account: account, Reason: "ip"}); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
