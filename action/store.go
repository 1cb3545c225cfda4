package action

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned by Store.Get and Store.Release for an account
// that is not flagged.
var ErrNotFound = errors.New("account not flagged")

// Flag is the record of a compromised account: why and when it was
// flagged. The facts are those of the first detection; later detections
// of the same account bump Hits and LastSeen and push ExpiresAt out.
type Flag struct {
	Account   string    // lowercased SASL login
	Reason    string    // ip | recipient | manual
	List      string    // the list that matched, empty for manual flags
	ClientIP  string    // the client address of the detection
	Recipient string    // the dropbox recipient, for reason recipient
	QueueID   string    // the MTA's queue id, when known
	FlaggedAt time.Time // first detection
	LastSeen  time.Time // latest detection or flagged transaction
	Hits      int       // detections (and manual flags) so far
	ExpiresAt time.Time // zero: until released
}

// A Peeker is a Store that can answer some reads from memory, at once.
// Peek returns the flag of account, or found false when it is not
// flagged; ok is false when it does not know without asking the store,
// and Get must be called. It never blocks.
type Peeker interface {
	Peek(account string) (f Flag, found, ok bool)
}

// Store remembers flagged accounts. Implementations are safe for
// concurrent use, compare account names lowercased, and treat a flag
// whose ExpiresAt has passed as absent.
type Store interface {
	// Get returns the flag of account, or ErrNotFound.
	Get(ctx context.Context, account string) (Flag, error)
	// Put records a detection. When the account is already flagged (and
	// not expired), the first detection's facts are kept, Hits is
	// incremented, LastSeen and ExpiresAt take f's values, and isNew is
	// false. Otherwise f is stored with Hits 1 and isNew is true.
	Put(ctx context.Context, f Flag) (isNew bool, err error)
	// Release removes the flag of account, or returns ErrNotFound.
	Release(ctx context.Context, account string) error
	// List returns every flagged account, oldest first.
	List(ctx context.Context) ([]Flag, error)
	// Close releases the store's resources.
	Close() error
}
