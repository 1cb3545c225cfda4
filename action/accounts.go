package action

import (
	"context"
	"errors"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Accounts is the milter's view of the account store. It sets the TTL of
// new flags, and it keeps the detections that the store failed to write
// in memory, answering for them and writing them once the store works
// again, so that an outage loses no detection while the process runs.
type Accounts struct {
	store Store
	ttl   time.Duration
	now   func() time.Time
	log   *zap.Logger

	mu      sync.Mutex
	pending map[string]Flag // account -> detection not yet written
}

// AccountsOptions configures NewAccounts.
type AccountsOptions struct {
	TTL time.Duration    // 0: flags last until released
	Now func() time.Time // nil: time.Now
	Log *zap.Logger      // nil: no logging
}

// NewAccounts wraps store.
func NewAccounts(store Store, o AccountsOptions) *Accounts {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	return &Accounts{store: store, ttl: o.TTL, now: o.Now, log: o.Log,
		pending: make(map[string]Flag)}
}

// Store returns the wrapped store.
func (a *Accounts) Store() Store { return a.store }

// Lookup returns the flag of account, or nil when it is not flagged.
func (a *Accounts) Lookup(ctx context.Context, account string) (*Flag, error) {
	account = strings.ToLower(account)
	a.mu.Lock()
	f, ok := a.pending[account]
	a.mu.Unlock()
	if ok && !expired(f, a.now()) {
		return &f, nil
	}

	f, err := a.store.Get(ctx, account)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &f, nil
}

// Record writes a detection. isNew reports the account's first detection.
// When the store fails, the detection is kept to be written later, the
// error is returned, and isNew is true unless the same account is already
// waiting to be written.
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

	isNew, err = a.store.Put(ctx, f)
	if err == nil {
		return isNew, nil
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
		if _, err := a.store.Put(ctx, f); err != nil {
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
			if err := a.Flush(ctx); err != nil {
				a.log.Warn("account store still failing; detections kept in memory",
					zap.Int("pending", a.Pending()), zap.Error(err))
			}
		}
	}
}

func expired(f Flag, now time.Time) bool {
	return !f.ExpiresAt.IsZero() && !now.Before(f.ExpiresAt)
}
