package action

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Outbox returns the outbox kept in the store's database, in the table
// outbox beside the flags.
func (s *SQLiteStore) Outbox() Outbox { return sqliteOutbox{s} }

var _ OutboxStore = (*SQLiteStore)(nil)

type sqliteOutbox struct{ s *SQLiteStore }

const sqliteOutboxColumns = `id, target, body, attempts, due, created_at, last_error`

// Add stores e.
func (o sqliteOutbox) Add(ctx context.Context, e OutboxEntry) error {
	if e.ID == "" {
		return errors.New("sqlite outbox: add: empty id")
	}
	if err := o.s.lockWrite(ctx); err != nil {
		return fmt.Errorf("sqlite outbox: add: %w", err)
	}
	defer o.s.unlockWrite()
	if e.Body == nil {
		e.Body = []byte{}
	}
	_, err := o.s.w.ExecContext(ctx,
		`INSERT INTO outbox (`+sqliteOutboxColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		e.ID, e.Target, e.Body, e.Attempts, sqliteTime(e.Due), sqliteTime(e.Created),
		e.LastError)
	if err != nil {
		return fmt.Errorf("sqlite outbox: add: %w", err)
	}
	return nil
}

// Claim returns the due entries as Outbox.Claim describes, in one
// statement, so that two processes on the same file never claim the same
// entry.
func (o sqliteOutbox) Claim(ctx context.Context, now time.Time, lease time.Duration,
	n int) ([]OutboxEntry, error) {
	if err := o.s.lockWrite(ctx); err != nil {
		return nil, fmt.Errorf("sqlite outbox: claim: %w", err)
	}
	defer o.s.unlockWrite()

	rows, err := o.s.w.QueryContext(ctx, `UPDATE outbox SET due = ?
		WHERE id IN (SELECT id FROM outbox WHERE due <= ? ORDER BY due, created_at, id LIMIT ?)
		RETURNING `+sqliteOutboxColumns,
		sqliteTime(now.Add(lease)), sqliteTime(now), n)
	if err != nil {
		return nil, fmt.Errorf("sqlite outbox: claim: %w", err)
	}
	defer rows.Close()
	var out []OutboxEntry
	for rows.Next() {
		var e OutboxEntry
		var due, created int64
		err := rows.Scan(&e.ID, &e.Target, &e.Body, &e.Attempts, &due, &created, &e.LastError)
		if err != nil {
			return nil, fmt.Errorf("sqlite outbox: claim: %w", err)
		}
		e.Due, e.Created = fromSQLiteTime(due), fromSQLiteTime(created)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite outbox: claim: %w", err)
	}
	// RETURNING gives no order; the due times are all the lease's now.
	sortOutbox(out)
	return out, nil
}

// Retry records a failed attempt.
func (o sqliteOutbox) Retry(ctx context.Context, e OutboxEntry) error {
	if err := o.s.lockWrite(ctx); err != nil {
		return fmt.Errorf("sqlite outbox: retry: %w", err)
	}
	defer o.s.unlockWrite()
	_, err := o.s.w.ExecContext(ctx,
		`UPDATE outbox SET attempts = ?, due = ?, last_error = ? WHERE id = ?`,
		e.Attempts, sqliteTime(e.Due), e.LastError, e.ID)
	if err != nil {
		return fmt.Errorf("sqlite outbox: retry: %w", err)
	}
	return nil
}

// Done removes the entry id.
func (o sqliteOutbox) Done(ctx context.Context, id string) error {
	if err := o.s.lockWrite(ctx); err != nil {
		return fmt.Errorf("sqlite outbox: done: %w", err)
	}
	defer o.s.unlockWrite()
	if _, err := o.s.w.ExecContext(ctx, `DELETE FROM outbox WHERE id = ?`, id); err != nil {
		return fmt.Errorf("sqlite outbox: done: %w", err)
	}
	return nil
}

// Len returns how many entries wait.
func (o sqliteOutbox) Len(ctx context.Context) (int, error) {
	var n int
	if err := o.s.db.QueryRowContext(ctx, `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite outbox: len: %w", err)
	}
	return n, nil
}
