// Package action decides what happens to an authenticated transaction and
// remembers compromised accounts.
//
// Decide is the decision itself, facts in and verdict out, with no
// protocol attached: the milter, the command line and the tests share it.
// An account is compromised when its client address is on an IP list,
// one of its recipients is on a recipient list, or the account store
// already holds a flag for it. A failed lookup or store read never counts
// as a listing; it lets the mail through or asks the MTA to try again
// later, as the on_error policy says, unless some other fact already
// proves the account compromised.
//
// Accounts wraps a Store (SQLiteStore embedded, or RedisStore shared by
// several milters) and keeps in memory the detections it could not write,
// retrying them, so that a store outage loses no detection while the
// process runs; it logs an outage once per interval, not once per
// transaction. Both stores also keep an Outbox of undelivered webhook
// notifications, so that they survive a restart.
package action
