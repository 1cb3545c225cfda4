package action

import (
	"context"
	"database/sql"
	"sync"
	"time"
)

// SQLiteChangeCheck is the ChangeCheck a daemon's SQLite store uses: a
// flag or release made by another process (authbl-milter accounts, say)
// takes effect in a running daemon within this time. The check costs a
// few microseconds, twenty times a second.
const SQLiteChangeCheck = 100 * time.Millisecond

// maxMemo is the most accounts a flagMemo holds; past it, it starts over.
const maxMemo = 100_000

// flagMemo keeps what an SQLiteStore read, so that the read made for
// every authenticated transaction costs a map lookup instead of an SQLite
// statement. A write through the same store forgets the account it wrote
// at once; the store's watcher (SQLiteStore.watchChanges) drops
// everything when another connection or process has committed.
//
// Every forget and drop starts a new generation; a read from the
// database is kept only if none happened while it ran, so a value read
// before a change is never kept after it.
type flagMemo struct {
	mu    sync.Mutex
	on    bool   // the watcher's last check succeeded
	gen   uint64 // bumped by every forget and drop
	flags map[string]memoEntry
}

type memoEntry struct {
	flag  Flag
	found bool // false: the account was not flagged
}

// lookup returns the remembered state of account: its flag, or found
// false; ok is false when nothing is known and the database must be read.
func (m *flagMemo) lookup(account string, now time.Time) (f Flag, found, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.on {
		return Flag{}, false, false
	}
	e, ok := m.flags[account]
	if !ok {
		return Flag{}, false, false
	}
	if e.found && !e.flag.ExpiresAt.IsZero() && !now.Before(e.flag.ExpiresAt) {
		return Flag{}, false, true // expired since it was read
	}
	return e.flag, e.found, true
}

// generation returns the generation a read from the database starts in.
func (m *flagMemo) generation() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.gen
}

// keep remembers what a read that started in generation gen found, unless
// the memo was dropped since.
func (m *flagMemo) keep(gen uint64, account string, f Flag, found bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.on || m.gen != gen {
		return
	}
	if len(m.flags) >= maxMemo {
		m.dropLocked()
	}
	m.flags[account] = memoEntry{flag: f, found: found}
}

// forget forgets account, after this process wrote it. The generation
// changes too, so that a read of it that started before the write is not
// kept; what is known of other accounts stays.
func (m *flagMemo) forget(account string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gen++
	delete(m.flags, account)
}

// drop forgets everything.
func (m *flagMemo) drop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dropLocked()
}

func (m *flagMemo) dropLocked() {
	m.gen++
	clear(m.flags)
}

// setOn switches the memo on or off; either way it starts empty.
func (m *flagMemo) setOn(on bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.on = on
	m.dropLocked()
}

// isOn reports whether the memo answers.
func (m *flagMemo) isOn() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.on
}

// dataVersion returns the PRAGMA data_version of conn, which changes
// whenever another connection commits to the database. Like Get, it does
// not hand ctx to database/sql, which would start two goroutines to watch
// it: the statement waits for no writer under WAL, and a lock held by
// another process's recovery is bounded by the busy timeout.
func dataVersion(ctx context.Context, conn *sql.Conn) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var v int64
	err := conn.QueryRowContext(context.WithoutCancel(ctx), `PRAGMA data_version`).Scan(&v)
	return v, err
}
