package action

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Accounts is the milter's view of the account store. It sets the TTL of
// new flags, and it keeps the detections that the store failed to write
// in memory, answering for them and writing them once the store works
// again, so that an outage loses no detection while the process runs.
//
// It also watches the store's health: an outage is logged when it
// starts, then at most once per log interval however many transactions
// fail meanwhile, and again when it ends. While the store is known to be
// down, Record does not wait for it: the detection goes straight to
// memory, so that a store that hangs costs a transaction one timeout
// (its read), not two. Whatever call succeeds first ends the outage: a
// read by the next transaction, or the flush that Run makes.
type Accounts struct {
	store    Store
	ttl      time.Duration
	now      func() time.Time
	log      *zap.Logger
	logEvery time.Duration

	mu      sync.Mutex
	pending map[string]Flag // account -> detection not yet written

	hmu      sync.Mutex
	down     bool      // the last store call failed
	since    time.Time // when the outage started
	lastLog  time.Time // when it was last logged
	failures int       // failed calls since then
	lastErr  error
	errors   atomic.Uint64 // failed store calls, for metrics
}

// DefaultOutageLogInterval is how often, at most, a store outage is
// logged while it lasts, unless AccountsOptions.LogInterval says otherwise.
const DefaultOutageLogInterval = time.Minute

// ErrStoreDown is returned by Record, wrapping the store's last error,
// when the store was not tried because it is known to be down.
var ErrStoreDown = errors.New("account store unavailable")

// AccountsOptions configures NewAccounts.
type AccountsOptions struct {
	TTL time.Duration    // 0: flags last until released
	Now func() time.Time // nil: time.Now
	Log *zap.Logger      // nil: no logging
	// LogInterval is how often, at most, an outage of the store is
	// logged while it lasts; 0 means DefaultOutageLogInterval.
	LogInterval time.Duration
}

// NewAccounts wraps store.
func NewAccounts(store Store, o AccountsOptions) *Accounts {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.LogInterval <= 0 {
		o.LogInterval = DefaultOutageLogInterval
	}
	return &Accounts{store: store, ttl: o.TTL, now: o.Now, log: o.Log,
		logEvery: o.LogInterval, pending: make(map[string]Flag)}
}

// Store returns the wrapped store.
func (a *Accounts) Store() Store { return a.store }

// waiting returns the detection of account (lowercased) that waits to be
// written, unless it has expired.
func (a *Accounts) waiting(account string) (*Flag, bool) {
	a.mu.Lock()
	f, ok := a.pending[account]
	a.mu.Unlock()
	if !ok || expired(f, a.now()) {
		return nil, false
	}
	return &f, true
}

// Lookup returns the flag of account, or nil when it is not flagged.
func (a *Accounts) Lookup(ctx context.Context, account string) (*Flag, error) {
	account = strings.ToLower(account)
	if f, ok := a.waiting(account); ok {
		return f, nil
	}

	f, err := a.store.Get(ctx, account)
	if errors.Is(err, ErrNotFound) {
		a.note(nil)
		return nil, nil
	}
	a.note(err)
	if err != nil {
		return nil, err
	}
	return &f, nil
}

// Peek returns the flag of account, or nil when it is not flagged, when
// that is known without waiting: a detection waiting to be written, or a
// store that answers from memory (a Peeker), unless the store is known
// to be down. It returns false when Lookup must ask the store.
func (a *Accounts) Peek(account string) (*Flag, bool) {
	account = strings.ToLower(account)
	if f, ok := a.waiting(account); ok {
		return f, true
	}
	p, ok := a.store.(Peeker)
	if !ok || a.StoreDown() {
		// During an outage the read goes to the store: its success ends
		// the outage, its failure follows on_error, as without memory.
		return nil, false
	}
	f, found, ok := p.Peek(account)
	switch {
	case !ok:
		return nil, false
	case !found:
		return nil, true
	}
	return &f, true
}

// Record writes a detection. isNew reports the account's first detection.
// When the store fails, or is known to be down (ErrStoreDown), the
// detection is kept to be written later, the error is returned, and isNew
// is true unless the same account is already waiting to be written: the
// store cannot tell, so an account flagged before the outage counts as
// new again.
func (a *Accounts) Record(ctx context.Context, f Flag) (isNew bool, err error) {
	f.Account = strings.ToLower(f.Account)
	now := a.now()
	if f.FlaggedAt.IsZero() {
		f.FlaggedAt = now
	}
	f.LastSeen = now
	if a.ttl > 0 {
		f.ExpiresAt = now.Add(a.ttl)
	}

	if down, last := a.isDown(); down {
		err = fmt.Errorf("%w: %v", ErrStoreDown, last)
	} else {
		isNew, err = a.store.Put(ctx, f)
		a.note(err)
		if err == nil {
			return isNew, nil
		}
	}
	a.mu.Lock()
	_, waiting := a.pending[f.Account]
	if !waiting {
		a.pending[f.Account] = f
	}
	a.mu.Unlock()
	return !waiting, err
}

// Pending returns how many detections wait to be written.
func (a *Accounts) Pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.pending)
}

// Flush tries to write every waiting detection once. It returns the
// first error; what failed stays waiting.
func (a *Accounts) Flush(ctx context.Context) error {
	a.mu.Lock()
	waiting := make([]Flag, 0, len(a.pending))
	for _, f := range a.pending {
		waiting = append(waiting, f)
	}
	a.mu.Unlock()

	var first error
	for _, f := range waiting {
		_, err := a.store.Put(ctx, f)
		a.note(err)
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		a.mu.Lock()
		delete(a.pending, f.Account)
		a.mu.Unlock()
		a.log.Info("stored a detection that had waited for the account store",
			zap.String("account", f.Account))
	}
	return first
}

// Run flushes waiting detections every interval until ctx is done, then
// makes a last attempt.
func (a *Accounts) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			last, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := a.Flush(last); err != nil {
				a.log.Error("detections could not be stored before exit",
					zap.Int("pending", a.Pending()), zap.Error(err))
			}
			return
		case <-t.C:
			if a.Pending() == 0 {
				continue
			}
			// A failure is logged by note, once per log interval.
			a.Flush(ctx)
		}
	}
}

// StoreErrors returns how many store calls have failed so far.
func (a *Accounts) StoreErrors() uint64 { return a.errors.Load() }

// StoreDown reports whether the last call to the store failed.
func (a *Accounts) StoreDown() bool {
	down, _ := a.isDown()
	return down
}

func (a *Accounts) isDown() (bool, error) {
	a.hmu.Lock()
	defer a.hmu.Unlock()
	return a.down, a.lastErr
}

// note records the outcome of a store call and logs the changes of the
// store's health: the start of an outage at once, then at most once per
// log interval while it lasts, and its end. A call that its caller
// cancelled tells nothing about the store.
func (a *Accounts) note(err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	if err != nil {
		a.errors.Add(1)
	}
	now := a.now()
	a.hmu.Lock()
	defer a.hmu.Unlock()
	switch {
	case err == nil && a.down:
		a.down = false
		a.log.Info("account store available again",
			zap.Duration("outage", now.Sub(a.since)),
			zap.Int("failures_since_last_report", a.failures),
			zap.Int("pending", a.Pending()))
	case err == nil:
	case !a.down:
		a.down, a.since, a.lastLog, a.failures, a.lastErr = true, now, now, 0, err
		a.log.Error("account store unavailable; detections are kept in memory"+
			" and written when it is back", zap.Error(err))
	default:
		a.failures++
		a.lastErr = err
		if now.Sub(a.lastLog) >= a.logEvery {
			a.log.Warn("account store still unavailable",
				zap.Duration("outage", now.Sub(a.since)),
				zap.Int("failures_since_last_report", a.failures),
				zap.Int("pending", a.Pending()), zap.Error(err))
			a.lastLog, a.failures = now, 0
		}
	}
}

func expired(f Flag, now time.Time) bool {
	return !f.ExpiresAt.IsZero() && !now.Before(f.ExpiresAt)
}
