package action

import (
	"context"
	"slices"
	"sync"
	"time"
)

// OutboxEntry is one notification that waits to be delivered: a request
// body for one target, with its delivery history.
type OutboxEntry struct {
	ID        string    // unique; chosen by whoever adds the entry
	Target    string    // where it goes, such as a webhook URL
	Body      []byte    // what is sent
	Attempts  int       // failed deliveries so far
	Due       time.Time // when the next attempt may start
	Created   time.Time // when the entry was added
	LastError string    // why the last attempt failed
}

// Outbox keeps notifications until they are delivered, in the account
// store, so that they survive a restart of the process. Several processes
// may share one outbox (on one Redis): Claim hands each due entry to one
// of them at a time. Delivery is at least once: an entry claimed by a
// process that dies before Done comes back when its lease runs out.
// Implementations are safe for concurrent use.
type Outbox interface {
	// Add stores e, due at e.Due.
	Add(ctx context.Context, e OutboxEntry) error
	// Claim returns up to n entries due at now, those due first first,
	// and makes each one due at now+lease, so that no other Claim
	// returns it before then.
	Claim(ctx context.Context, now time.Time, lease time.Duration, n int) ([]OutboxEntry, error)
	// Retry records a failed attempt: it stores e's Attempts, Due and
	// LastError. An entry that is gone (Done) stays gone.
	Retry(ctx context.Context, e OutboxEntry) error
	// Done removes the entry id, delivered or given up. An unknown id is
	// not an error.
	Done(ctx context.Context, id string) error
	// Len returns how many entries wait.
	Len(ctx context.Context) (int, error)
}

// OutboxStore is a Store that also keeps an Outbox.
type OutboxStore interface {
	Store
	Outbox() Outbox
}

// MemOutbox is an Outbox in memory, for a store that has none and for
// entries that the store could not take: they are lost with the process.
type MemOutbox struct {
	mu      sync.Mutex
	entries map[string]OutboxEntry
}

var _ Outbox = (*MemOutbox)(nil)

// NewMemOutbox returns an empty outbox.
func NewMemOutbox() *MemOutbox {
	return &MemOutbox{entries: make(map[string]OutboxEntry)}
}

// Add stores e.
func (m *MemOutbox) Add(ctx context.Context, e OutboxEntry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	e.Body = slices.Clone(e.Body)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.entries[e.ID] = e
	return nil
}

// Claim returns the due entries as Outbox.Claim describes.
func (m *MemOutbox) Claim(ctx context.Context, now time.Time, lease time.Duration,
	n int) ([]OutboxEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var due []OutboxEntry
	for _, e := range m.entries {
		if !e.Due.After(now) {
			due = append(due, e)
		}
	}
	sortOutbox(due)
	if len(due) > n {
		due = due[:n]
	}
	for i := range due {
		e := m.entries[due[i].ID]
		e.Due = now.Add(lease)
		m.entries[e.ID] = e
		due[i].Body = slices.Clone(due[i].Body)
	}
	return due, nil
}

// Retry records a failed attempt.
func (m *MemOutbox) Retry(ctx context.Context, e OutboxEntry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.entries[e.ID]
	if !ok {
		return nil
	}
	old.Attempts, old.Due, old.LastError = e.Attempts, e.Due, e.LastError
	m.entries[e.ID] = old
	return nil
}

// Done removes the entry id.
func (m *MemOutbox) Done(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.entries, id)
	return nil
}

// Len returns how many entries wait.
func (m *MemOutbox) Len(ctx context.Context) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.entries), nil
}

// sortOutbox orders entries by due time, then age, then id.
func sortOutbox(es []OutboxEntry) {
	slices.SortFunc(es, func(a, b OutboxEntry) int {
		if c := a.Due.Compare(b.Due); c != 0 {
			return c
		}
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
}
