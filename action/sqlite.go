package action

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver, pure Go
)

// sqliteSchemaVersion is the schema this code writes, kept in the
// database's PRAGMA user_version. A database with a newer version was
// written by a newer program and is refused rather than misread.
// Version 2 added the outbox table.
const sqliteSchemaVersion = 2

// sqliteSchema creates version 1. Times are UTC unix nanoseconds, 0 for
// the zero time; expires_at 0 means until released.
const sqliteSchema = `
CREATE TABLE IF NOT EXISTS flags (
	account    TEXT    NOT NULL PRIMARY KEY,
	reason     TEXT    NOT NULL,
	list       TEXT    NOT NULL,
	client_ip  TEXT    NOT NULL,
	recipient  TEXT    NOT NULL,
	queue_id   TEXT    NOT NULL,
	flagged_at INTEGER NOT NULL,
	last_seen  INTEGER NOT NULL,
	hits       INTEGER NOT NULL,
	expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS flags_flagged_at ON flags (flagged_at);
`

// sqliteOutboxSchema is what version 2 added: undelivered
// notifications. Times as in flags.
const sqliteOutboxSchema = `
CREATE TABLE IF NOT EXISTS outbox (
	id         TEXT    NOT NULL PRIMARY KEY,
	target     TEXT    NOT NULL,
	body       BLOB    NOT NULL,
	attempts   INTEGER NOT NULL,
	due        INTEGER NOT NULL,
	created_at INTEGER NOT NULL,
	last_error TEXT    NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (due);
`

const sqliteColumns = `account, reason, list, client_ip, recipient, queue_id,
	flagged_at, last_seen, hits, expires_at`

// sqliteLive is the condition of a flag that has not expired; its one
// parameter is the current time in unix nanoseconds.
const sqliteLive = `(expires_at = 0 OR expires_at > ?)`

// SQLiteBusyTimeout is how long a statement waits for a lock held by
// another connection or process (the CLI, say) before it fails.
const SQLiteBusyTimeout = 5 * time.Second

// SQLiteOptions tunes OpenSQLite. The zero value is ready to use.
type SQLiteOptions struct {
	// Now is the clock that decides whether a flag has expired and that
	// fills in a detection's missing times. Nil means time.Now.
	Now func() time.Time
	// BusyTimeout is how long to wait for another process's lock.
	// Zero means SQLiteBusyTimeout.
	BusyTimeout time.Duration
	// ChangeCheck, when positive, lets Get answer from memory: what it
	// read is kept, what this store writes drops it at once, and twice
	// every ChangeCheck the database is asked whether another connection
	// or process committed anything since, which drops it too. Changes
	// made by another process then take effect within ChangeCheck. Zero
	// reads the database on every Get. A daemon uses SQLiteChangeCheck.
	ChangeCheck time.Duration
}

// SQLiteStore is the embedded Store: one SQLite file in WAL mode, so
// that the daemon and the accounts subcommand, a separate process, can
// read and write it at the same time. It is safe for concurrent use.
type SQLiteStore struct {
	db   *sql.DB
	path string
	now  func() time.Time
	// wlock serialises this process's writers, so that they queue here,
	// honouring their contexts, instead of polling SQLite's busy
	// handler; the busy timeout then only covers other processes.
	wlock chan struct{}
	// w is where writes go, used only while holding wlock: the pool, or
	// with ChangeCheck the watcher's connection (see watchChanges).
	w sqlRunner
	// get is Get's statement, prepared once: preparing it for every call
	// was most of a read's cost.
	get *sql.Stmt

	// memo, with ChangeCheck, holds what Get read. watch is the
	// connection its watcher asks and this store writes on (nil while
	// none could be had), used only while holding wlock; stop and
	// stopped end the watcher.
	memo     *flagMemo
	watch    *sql.Conn
	stop     chan struct{}
	stopped  chan struct{}
	stopOnce sync.Once
}

// sqlRunner runs statements: a *sql.DB or a *sql.Conn.
type sqlRunner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

var _ Store = (*SQLiteStore)(nil)

// OpenSQLite opens the account store at path, creating its directory
// (mode 0750), the file (mode 0640) and the schema when they are
// missing. It fails on a file that is not an SQLite database or whose
// schema is newer than this program's.
func OpenSQLite(path string, opts SQLiteOptions) (*SQLiteStore, error) {
	if path == "" {
		return nil, errors.New("sqlite store: open: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: open %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o750); err != nil {
		return nil, fmt.Errorf("sqlite store: open %s: create directory: %w", abs, err)
	}
	if err := createSQLiteFile(abs); err != nil {
		return nil, fmt.Errorf("sqlite store: open %s: %w", abs, err)
	}

	db, err := sql.Open("sqlite", sqliteDSN(abs, opts.BusyTimeout))
	if err != nil {
		return nil, fmt.Errorf("sqlite store: open %s: %w", abs, err)
	}
	s := &SQLiteStore{db: db, path: abs, now: opts.Now, wlock: make(chan struct{}, 1), w: db}
	if s.now == nil {
		s.now = time.Now
	}
	if err := s.migrate(context.Background()); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite store: open %s: %w", abs, err)
	}
	s.get, err = db.Prepare(`SELECT ` + sqliteColumns + ` FROM flags WHERE account = ? AND ` +
		sqliteLive)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite store: open %s: prepare: %w", abs, err)
	}
	if opts.ChangeCheck > 0 {
		if err := s.startMemo(opts.ChangeCheck); err != nil {
			s.get.Close()
			db.Close()
			return nil, fmt.Errorf("sqlite store: open %s: %w", abs, err)
		}
	}
	return s, nil
}

// startMemo turns on the memory of reads and starts its watcher.
func (s *SQLiteStore) startMemo(every time.Duration) error {
	s.memo = &flagMemo{flags: make(map[string]memoEntry)}
	version, err := s.attachWatch(context.Background())
	if err != nil {
		return err
	}
	s.memo.setOn(true)
	s.stop, s.stopped = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(s.stopped)
		s.watchChanges(every, version)
	}()
	return nil
}

// attachWatch takes a connection of the pool for the watcher and this
// store's writes, and returns its data_version. The caller holds wlock,
// or no other goroutine uses the store yet.
func (s *SQLiteStore) attachWatch(ctx context.Context) (int64, error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return 0, err
	}
	version, err := dataVersion(ctx, conn)
	if err != nil {
		conn.Close()
		return 0, err
	}
	s.watch, s.w = conn, conn
	return version, nil
}

// detachWatch gives the watcher's connection back; writes go to the pool.
// The caller holds wlock.
func (s *SQLiteStore) detachWatch() {
	if s.watch != nil {
		s.watch.Close()
	}
	s.watch, s.w = nil, s.db
}

// watchChanges drops the memory of reads whenever another connection or
// process has committed to the database. Twice an interval it asks PRAGMA
// data_version, which changes with the commits of every connection but
// the one asking; this store writes on that same connection, so its own
// commits, whose accounts it forgets itself, do not count. A check that
// fails, or cannot be made within half an interval because a write holds
// the connection, turns the memory off until one succeeds; a failed
// connection is replaced. It returns when s.stop is closed.
func (s *SQLiteStore) watchChanges(every time.Duration, version int64) {
	// A check comes every half interval and waits at most half an
	// interval for the connection, so that a commit is seen, or memory
	// is off, within one interval of it.
	half := max(every/2, 1)
	tick := time.NewTicker(half)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), half)
		err := s.lockWrite(ctx)
		cancel()
		if err != nil {
			s.memo.setOn(false)
			continue
		}
		// The deadline was for the wait: a check that has the connection
		// runs to its end, so that a slow moment is not taken for a
		// broken connection.
		var v int64
		if s.watch == nil {
			v, err = s.attachWatch(context.Background())
		} else if v, err = dataVersion(context.Background(), s.watch); err != nil {
			s.detachWatch()
		}
		switch {
		case err != nil:
			s.memo.setOn(false)
		case !s.memo.isOn():
			// Back after a failure: start afresh, whatever happened.
			s.memo.setOn(true)
		case v != version:
			s.memo.drop()
		}
		if err == nil {
			version = v
		}
		s.unlockWrite()
	}
}

// createSQLiteFile creates the database file with mode 0640 when it does
// not exist, so that SQLite, which gives its -wal and -shm files the
// mode of the database, does not create a world-readable list of
// accounts.
func createSQLiteFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if errors.Is(err, os.ErrExist) {
		if fi, err := os.Stat(path); err == nil && fi.IsDir() {
			return errors.New("is a directory")
		}
		return nil
	}
	if err != nil {
		return err
	}
	return f.Close()
}

// sqliteDSN builds a file: URI for path. The pragmas are in the DSN, not
// run once after opening, because database/sql opens connections as it
// needs them and each one must wait on locks and use the WAL. Immediate
// transactions take the write lock at BEGIN: a read lock upgraded later
// fails at once with SQLITE_BUSY whatever the busy timeout.
//
// synchronous=NORMAL is the usual choice with a WAL: a commit survives
// the process crashing but not the machine losing power, and a write
// costs no fsync.
func sqliteDSN(path string, busy time.Duration) string {
	if busy <= 0 {
		busy = SQLiteBusyTimeout
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(busy.Milliseconds(), 10)+")")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Set("_txlock", "immediate")
	u := url.URL{Scheme: "file", Path: path, RawQuery: q.Encode()}
	return u.String()
}

// migrate creates the schema in an empty database, brings an older one
// up to date, and refuses one written by a newer program. It runs in a
// write transaction, so two processes opening a new file at once create
// the schema once.
func (s *SQLiteStore) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()

	var version int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return err
	}
	switch {
	case version == sqliteSchemaVersion:
		return nil
	case version > sqliteSchemaVersion:
		return fmt.Errorf("schema version %d is newer than this program's %d",
			version, sqliteSchemaVersion)
	}
	if version == 0 {
		// Version 0 with tables is some other program's database.
		var tables int
		err = tx.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_schema").Scan(&tables)
		if err != nil {
			return err
		}
		if tables > 0 {
			return errors.New("not an account store: tables but no schema version")
		}
		if _, err := tx.ExecContext(ctx, sqliteSchema); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
	}
	// Version 1 to 2.
	if _, err := tx.ExecContext(ctx, sqliteOutboxSchema); err != nil {
		return fmt.Errorf("create outbox: %w", err)
	}
	// PRAGMA takes no parameters; the version is a constant.
	pragma := "PRAGMA user_version = " + strconv.Itoa(sqliteSchemaVersion)
	if _, err := tx.ExecContext(ctx, pragma); err != nil {
		return fmt.Errorf("set schema version: %w", err)
	}
	return tx.Commit()
}

// Path returns the absolute path of the database file.
func (s *SQLiteStore) Path() string { return s.path }

// Get returns the flag of account, or ErrNotFound when it is not
// flagged or its flag has expired.
//
// A ctx already done fails the read, but the read itself does not watch
// ctx: watching costs two goroutines per statement (database/sql's and
// the driver's), more than the read of one row by its key. Under WAL a
// read waits for no writer; the one wait it can meet, a lock held during
// another process's recovery, is bounded by the busy timeout, and the
// milter bounds its own wait for the answer independently.
func (s *SQLiteStore) Get(ctx context.Context, account string) (Flag, error) {
	if err := ctx.Err(); err != nil {
		return Flag{}, fmt.Errorf("sqlite store: get: %w", err)
	}
	account = sqliteAccount(account)
	if f, found, ok := s.Peek(account); ok {
		if !found {
			return Flag{}, ErrNotFound
		}
		return f, nil
	}
	var gen uint64
	if s.memo != nil {
		gen = s.memo.generation()
	}
	row := s.get.QueryRowContext(context.WithoutCancel(ctx), account, sqliteTime(s.now()))
	f, err := scanSQLiteFlag(row)
	if errors.Is(err, sql.ErrNoRows) {
		if s.memo != nil {
			s.memo.keep(gen, account, Flag{}, false)
		}
		return Flag{}, ErrNotFound
	}
	if err != nil {
		return Flag{}, fmt.Errorf("sqlite store: get: %w", err)
	}
	if s.memo != nil {
		s.memo.keep(gen, account, f, true)
	}
	return f, nil
}

// Peek implements Peeker: with ChangeCheck, it answers from what Get
// read before, when that is still known to be the database's state.
func (s *SQLiteStore) Peek(account string) (f Flag, found, ok bool) {
	if s.memo == nil {
		return Flag{}, false, false
	}
	return s.memo.lookup(sqliteAccount(account), s.now())
}

// Put records a detection as the Store interface describes. A zero
// FlaggedAt is taken as now, a zero LastSeen as FlaggedAt. An expired
// flag is replaced, as if it had never been there.
func (s *SQLiteStore) Put(ctx context.Context, f Flag) (isNew bool, err error) {
	f.Account = sqliteAccount(f.Account)
	if f.Account == "" {
		return false, errors.New("sqlite store: put: empty account")
	}
	now := s.now()
	if f.FlaggedAt.IsZero() {
		f.FlaggedAt = now
	}
	if f.LastSeen.IsZero() {
		f.LastSeen = f.FlaggedAt
	}

	isNew, err = s.put(ctx, f, sqliteTime(now))
	s.forget(f.Account) // even after a failure: a commit may have happened
	if err != nil {
		return false, fmt.Errorf("sqlite store: put: %w", err)
	}
	return isNew, nil
}

func (s *SQLiteStore) put(ctx context.Context, f Flag, now int64) (_ bool, err error) {
	if err := s.lockWrite(ctx); err != nil {
		return false, err
	}
	defer s.unlockWrite()

	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer func() {
		// When ctx ends during the transaction, database/sql rolls it
		// back on a goroutine of its own and Rollback here returns
		// ErrTxDone at once: the watcher's connection, where the next
		// write goes, is free only once that rollback has run. Give it
		// back (Close waits for the rollback); the next check takes one
		// again, and memory is off until then.
		if rerr := tx.Rollback(); err != nil && errors.Is(rerr, sql.ErrTxDone) && s.watch != nil {
			s.memo.setOn(false)
			s.detachWatch()
		}
	}()

	_, err = tx.ExecContext(ctx,
		`DELETE FROM flags WHERE account = ? AND NOT `+sqliteLive, f.Account, now)
	if err != nil {
		return false, err
	}
	// A flag that survived the DELETE is live: the conflict branch keeps
	// its facts. Hits is 1 exactly when the row was inserted.
	var hits int
	err = tx.QueryRowContext(ctx, `INSERT INTO flags (`+sqliteColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?)
		ON CONFLICT (account) DO UPDATE SET
			hits = hits + 1,
			last_seen = excluded.last_seen,
			expires_at = excluded.expires_at
		RETURNING hits`,
		f.Account, f.Reason, f.List, f.ClientIP, f.Recipient, f.QueueID,
		sqliteTime(f.FlaggedAt), sqliteTime(f.LastSeen), sqliteTime(f.ExpiresAt),
	).Scan(&hits)
	if err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, err
	}
	return hits == 1, nil
}

// Release removes the flag of account, or returns ErrNotFound when it
// is not flagged or its flag has expired (the expired row goes too).
func (s *SQLiteStore) Release(ctx context.Context, account string) error {
	if err := s.lockWrite(ctx); err != nil {
		return fmt.Errorf("sqlite store: release: %w", err)
	}
	defer s.unlockWrite()

	var expires int64
	err := s.w.QueryRowContext(ctx,
		`DELETE FROM flags WHERE account = ? RETURNING expires_at`,
		sqliteAccount(account)).Scan(&expires)
	s.forget(sqliteAccount(account))
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("sqlite store: release: %w", err)
	}
	if expires != 0 && expires <= sqliteTime(s.now()) {
		return ErrNotFound
	}
	return nil
}

// List returns every flagged account that has not expired, oldest
// first; accounts flagged at the same time come in name order.
func (s *SQLiteStore) List(ctx context.Context) ([]Flag, error) {
	rows, err := s.db.QueryContext(ctx,
		`SELECT `+sqliteColumns+` FROM flags WHERE `+sqliteLive+` ORDER BY flagged_at, account`,
		sqliteTime(s.now()))
	if err != nil {
		return nil, fmt.Errorf("sqlite store: list: %w", err)
	}
	defer rows.Close()

	flags := []Flag{}
	for rows.Next() {
		f, err := scanSQLiteFlag(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite store: list: %w", err)
		}
		flags = append(flags, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite store: list: %w", err)
	}
	return flags, nil
}

// Ping checks that the database can be read, for a health check.
func (s *SQLiteStore) Ping(ctx context.Context) error {
	var one int
	err := s.db.QueryRowContext(ctx, `SELECT 1 FROM flags LIMIT 1`).Scan(&one)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("sqlite store: ping: %w", err)
	}
	return nil
}

// forget forgets what Get read of account, after a write of this store.
func (s *SQLiteStore) forget(account string) {
	if s.memo != nil {
		s.memo.forget(account)
	}
}

// Close closes the database. Calls after Close fail.
func (s *SQLiteStore) Close() error {
	if s.memo != nil {
		s.stopOnce.Do(func() {
			close(s.stop)
			<-s.stopped
			s.memo.setOn(false)
			s.wlock <- struct{}{}
			s.detachWatch()
			<-s.wlock
		})
	}
	s.get.Close()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("sqlite store: close: %w", err)
	}
	return nil
}

func (s *SQLiteStore) lockWrite(ctx context.Context) error {
	select {
	case s.wlock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *SQLiteStore) unlockWrite() { <-s.wlock }

// scanSQLiteFlag reads one row of sqliteColumns.
func scanSQLiteFlag(row interface{ Scan(...any) error }) (Flag, error) {
	var f Flag
	var flagged, seen, expires int64
	err := row.Scan(&f.Account, &f.Reason, &f.List, &f.ClientIP, &f.Recipient,
		&f.QueueID, &flagged, &seen, &f.Hits, &expires)
	if err != nil {
		return Flag{}, err
	}
	f.FlaggedAt = fromSQLiteTime(flagged)
	f.LastSeen = fromSQLiteTime(seen)
	f.ExpiresAt = fromSQLiteTime(expires)
	return f, nil
}

// sqliteAccount is the form account names are stored and compared in.
func sqliteAccount(account string) string {
	return strings.ToLower(account)
}

// sqliteTime maps the zero time to 0; time.Time.UnixNano is undefined there.
func sqliteTime(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromSQLiteTime(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
