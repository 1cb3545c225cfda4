package action

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"
)

// DefaultRedisPrefix starts every key the Redis store writes, unless
// RedisOptions.Prefix says otherwise.
const DefaultRedisPrefix = "authbl:"

// RedisOptions tunes OpenRedis. The zero value is ready to use.
type RedisOptions struct {
	// Prefix starts every key, so that several sites can share one
	// Redis; "" means DefaultRedisPrefix.
	Prefix string
	// Now is the clock that decides whether a flag has expired and that
	// fills in a detection's missing times. Nil means time.Now.
	Now func() time.Time
}

// RedisStore is the Store shared by several milters: every instance on
// the same Redis (6 or later, or Valkey) and prefix sees the same flags.
// It is safe for concurrent use.
//
// A flag is a hash at PREFIX "flag:" ACCOUNT; times are unix
// milliseconds, 0 for none. A flag with an expiry also has it as the
// key's Redis expiry, so that Redis removes it; the store checks the
// time itself as well, with its own clock. Put runs as one Lua script,
// atomic across every client of the server, so exactly one Put sees
// isNew for a new account.
//
// The outbox is a hash PREFIX "outbox" (id -> entry as JSON) and a sorted
// set PREFIX "outbox:due" (id by due time).
//
// TODO: Redis Cluster is not supported: the outbox scripts touch two keys
// that would need a common hash tag to live in one slot.
type RedisStore struct {
	rdb    *redis.Client
	prefix string
	now    func() time.Time
}

var _ OutboxStore = (*RedisStore)(nil)

// OpenRedis returns a store on the Redis at url: redis://[[USER]:PASSWORD@]HOST:PORT/DB,
// rediss:// for TLS, or unix:///PATH?db=N. It does not connect: the
// first command does, and a Redis that is down makes commands fail until
// it is back. Errors never quote the URL, which may hold a password.
//
// Every command is bounded by its context (and by the client's 5 s
// timeouts). A command is not retried by the client: a Put whose reply
// was lost might otherwise be applied twice. Reads that fail follow
// on_error; writes that fail are retried by Accounts.
func OpenRedis(url string, opts RedisOptions) (*RedisStore, error) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, errors.New("redis store: open: the URL does not parse " +
			"(want redis://, rediss:// or unix://)")
	}
	o.ContextTimeoutEnabled = true
	o.MaxRetries = -1
	o.DialerRetries = 1
	o.DisableIdentity = true
	o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}

	s := &RedisStore{rdb: redis.NewClient(o), prefix: opts.Prefix, now: opts.Now}
	if s.prefix == "" {
		s.prefix = DefaultRedisPrefix
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// Prefix returns the prefix of the store's keys.
func (s *RedisStore) Prefix() string { return s.prefix }

func (s *RedisStore) flagKey(account string) string {
	return s.prefix + "flag:" + strings.ToLower(account)
}

// redisPut is Put: KEYS[1] is the flag; ARGV is now, expires_at,
// last_seen, then the field-value pairs of a new flag. It returns 1 for
// a new flag, 0 for one already there.
var redisPut = redis.NewScript(`
local now = tonumber(ARGV[1])
local expires = tonumber(ARGV[2])
local isNew = 1
local old = redis.call('HGET', KEYS[1], 'expires_at')
if old then
	old = tonumber(old)
	if old ~= 0 and old <= now then
		redis.call('DEL', KEYS[1])
	else
		isNew = 0
	end
end
if isNew == 1 then
	redis.call('HSET', KEYS[1], unpack(ARGV, 4))
else
	redis.call('HINCRBY', KEYS[1], 'hits', 1)
	redis.call('HSET', KEYS[1], 'last_seen', ARGV[3], 'expires_at', ARGV[2])
end
if expires == 0 then
	redis.call('PERSIST', KEYS[1])
elseif expires > now then
	redis.call('PEXPIRE', KEYS[1], expires - now)
else
	redis.call('DEL', KEYS[1])
end
return isNew
`)

// Get returns the flag of account, or ErrNotFound when it is not
// flagged or its flag has expired.
func (s *RedisStore) Get(ctx context.Context, account string) (Flag, error) {
	m, err := s.rdb.HGetAll(ctx, s.flagKey(account)).Result()
	if err != nil {
		return Flag{}, fmt.Errorf("redis store: get: %w", err)
	}
	if len(m) == 0 {
		return Flag{}, ErrNotFound
	}
	f, err := redisFlag(m)
	if err != nil {
		return Flag{}, fmt.Errorf("redis store: get %s: %w", strings.ToLower(account), err)
	}
	if expired(f, s.now()) {
		return Flag{}, ErrNotFound
	}
	return f, nil
}

// Put records a detection as the Store interface describes. A zero
// FlaggedAt is taken as now, a zero LastSeen as FlaggedAt. An expired
// flag is replaced, as if it had never been there.
func (s *RedisStore) Put(ctx context.Context, f Flag) (isNew bool, err error) {
	f.Account = strings.ToLower(f.Account)
	if f.Account == "" {
		return false, errors.New("redis store: put: empty account")
	}
	now := s.now()
	if f.FlaggedAt.IsZero() {
		f.FlaggedAt = now
	}
	if f.LastSeen.IsZero() {
		f.LastSeen = f.FlaggedAt
	}

	expires, seen := redisTime(f.ExpiresAt), redisTime(f.LastSeen)
	args := []any{redisTime(now), expires, seen,
		"account", f.Account, "reason", f.Reason, "list", f.List,
		"client_ip", f.ClientIP, "recipient", f.Recipient, "queue_id", f.QueueID,
		"flagged_at", redisTime(f.FlaggedAt), "last_seen", seen, "hits", 1,
		"expires_at", expires}
	n, err := redisPut.Run(ctx, s.rdb, []string{s.flagKey(f.Account)}, args...).Int()
	if err != nil {
		return false, fmt.Errorf("redis store: put: %w", err)
	}
	return n == 1, nil
}

// Release removes the flag of account, or returns ErrNotFound when it
// is not flagged or its flag has expired (the expired one goes too).
func (s *RedisStore) Release(ctx context.Context, account string) error {
	key := s.flagKey(account)
	var expires *redis.StringCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		expires = p.HGet(ctx, key, "expires_at")
		p.Del(ctx, key)
		return nil
	})
	if errors.Is(err, redis.Nil) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("redis store: release: %w", err)
	}
	ms, err := expires.Int64()
	if err != nil {
		return fmt.Errorf("redis store: release: expires_at: %w", err)
	}
	if ms != 0 && ms <= redisTime(s.now()) {
		return ErrNotFound
	}
	return nil
}

// redisScanCount is the COUNT hint of each SCAN step in List.
const redisScanCount = 500

// List returns every flagged account that has not expired, oldest
// first; accounts flagged at the same time come in name order. It walks
// the keys with SCAN, which never blocks the server as KEYS would; a flag
// written or removed during the walk may be missed or seen.
func (s *RedisStore) List(ctx context.Context) ([]Flag, error) {
	now := s.now()
	flags := []Flag{}
	iter := s.rdb.Scan(ctx, 0, redisGlobEscape(s.prefix)+"flag:*", redisScanCount).Iterator()
	var keys []string
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		cmds, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys {
				p.HGetAll(ctx, k)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for i, c := range cmds {
			m, err := c.(*redis.MapStringStringCmd).Result()
			if err != nil {
				return err
			}
			if len(m) == 0 { // removed since the SCAN
				continue
			}
			f, err := redisFlag(m)
			if err != nil {
				return fmt.Errorf("key %s: %w", keys[i], err)
			}
			if !expired(f, now) {
				flags = append(flags, f)
			}
		}
		keys = keys[:0]
		return nil
	}
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == redisScanCount {
			if err := flush(); err != nil {
				return nil, fmt.Errorf("redis store: list: %w", err)
			}
		}
	}
	if err := iter.Err(); err != nil {
		return nil, fmt.Errorf("redis store: list: %w", err)
	}
	if err := flush(); err != nil {
		return nil, fmt.Errorf("redis store: list: %w", err)
	}
	slices.SortFunc(flags, func(a, b Flag) int {
		if c := a.FlaggedAt.Compare(b.FlaggedAt); c != 0 {
			return c
		}
		return strings.Compare(a.Account, b.Account)
	})
	return flags, nil
}

// Ping checks that Redis answers, for a health check.
func (s *RedisStore) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis store: ping: %w", err)
	}
	return nil
}

// Close closes the connections. Calls after Close fail.
func (s *RedisStore) Close() error {
	if err := s.rdb.Close(); err != nil {
		return fmt.Errorf("redis store: close: %w", err)
	}
	return nil
}

// redisFlag reads the hash of a flag.
func redisFlag(m map[string]string) (Flag, error) {
	f := Flag{Account: m["account"], Reason: m["reason"], List: m["list"],
		ClientIP: m["client_ip"], Recipient: m["recipient"], QueueID: m["queue_id"]}
	ints := []struct {
		field string
		t     *time.Time
	}{{"flagged_at", &f.FlaggedAt}, {"last_seen", &f.LastSeen}, {"expires_at", &f.ExpiresAt}}
	for _, i := range ints {
		ms, err := strconv.ParseInt(m[i.field], 10, 64)
		if err != nil {
			return Flag{}, fmt.Errorf("not a flag: field %s: %q", i.field, m[i.field])
		}
		*i.t = fromRedisTime(ms)
	}
	hits, err := strconv.Atoi(m["hits"])
	if err != nil {
		return Flag{}, fmt.Errorf("not a flag: field hits: %q", m["hits"])
	}
	f.Hits = hits
	return f, nil
}

// redisTime is t in unix milliseconds, 0 for the zero time. Milliseconds
// are exact in a Lua number, which nanoseconds are not.
func redisTime(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromRedisTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

// redisGlobEscape quotes the glob characters of s for SCAN MATCH.
func redisGlobEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Outbox returns the outbox kept in Redis beside the flags.
func (s *RedisStore) Outbox() Outbox {
	return redisOutbox{s: s, hash: s.prefix + "outbox", due: s.prefix + "outbox:due"}
}

type redisOutbox struct {
	s         *RedisStore
	hash, due string
}

// redisEntry is an OutboxEntry as stored, in JSON.
type redisEntry struct {
	ID        string `json:"id"`
	Target    string `json:"target"`
	Body      []byte `json:"body"`
	Attempts  int    `json:"attempts"`
	Created   int64  `json:"created"`
	LastError string `json:"last_error,omitempty"`
}

// redisClaim is Claim: KEYS are the hash and the sorted set; ARGV is now,
// the end of the lease (both unix ms) and the most entries to return.
var redisClaim = redis.NewScript(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
	local v = redis.call('HGET', KEYS[1], id)
	if v then
		redis.call('ZADD', KEYS[2], ARGV[2], id)
		table.insert(out, {v, redis.call('ZSCORE', KEYS[2], id)})
	else
		redis.call('ZREM', KEYS[2], id)
	end
end
return out
`)

// redisRetry is Retry: it rewrites an entry only while it exists.
var redisRetry = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
	return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
`)

// Add stores e.
func (o redisOutbox) Add(ctx context.Context, e OutboxEntry) error {
	if e.ID == "" {
		return errors.New("redis outbox: add: empty id")
	}
	v, err := json.Marshal(redisEntryOf(e))
	if err != nil {
		return fmt.Errorf("redis outbox: add: %w", err)
	}
	_, err = o.s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, o.hash, e.ID, v)
		p.ZAdd(ctx, o.due, redis.Z{Score: float64(redisTime(e.Due)), Member: e.ID})
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis outbox: add: %w", err)
	}
	return nil
}

// Claim returns the due entries as Outbox.Claim describes, in one script,
// so that two milters on the same Redis never claim the same entry.
func (o redisOutbox) Claim(ctx context.Context, now time.Time, lease time.Duration,
	n int) ([]OutboxEntry, error) {
	res, err := redisClaim.Run(ctx, o.s.rdb, []string{o.hash, o.due},
		redisTime(now), redisTime(now.Add(lease)), n).Slice()
	if err != nil {
		return nil, fmt.Errorf("redis outbox: claim: %w", err)
	}
	out := make([]OutboxEntry, 0, len(res))
	for _, r := range res {
		pair, ok := r.([]any)
		if !ok || len(pair) != 2 {
			return nil, fmt.Errorf("redis outbox: claim: unexpected reply %v", r)
		}
		v, _ := pair[0].(string)
		var re redisEntry
		if err := json.Unmarshal([]byte(v), &re); err != nil {
			return nil, fmt.Errorf("redis outbox: claim: entry: %w", err)
		}
		due, err := strconv.ParseFloat(fmt.Sprint(pair[1]), 64)
		if err != nil {
			return nil, fmt.Errorf("redis outbox: claim: due time %v: %w", pair[1], err)
		}
		out = append(out, OutboxEntry{ID: re.ID, Target: re.Target, Body: re.Body,
			Attempts: re.Attempts, Due: fromRedisTime(int64(due)),
			Created: fromRedisTime(re.Created), LastError: re.LastError})
	}
	sortOutbox(out)
	return out, nil
}

// Retry records a failed attempt.
func (o redisOutbox) Retry(ctx context.Context, e OutboxEntry) error {
	v, err := json.Marshal(redisEntryOf(e))
	if err != nil {
		return fmt.Errorf("redis outbox: retry: %w", err)
	}
	err = redisRetry.Run(ctx, o.s.rdb, []string{o.hash, o.due},
		e.ID, v, redisTime(e.Due)).Err()
	if err != nil {
		return fmt.Errorf("redis outbox: retry: %w", err)
	}
	return nil
}

// Done removes the entry id.
func (o redisOutbox) Done(ctx context.Context, id string) error {
	_, err := o.s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HDel(ctx, o.hash, id)
		p.ZRem(ctx, o.due, id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis outbox: done: %w", err)
	}
	return nil
}

// Len returns how many entries wait.
func (o redisOutbox) Len(ctx context.Context) (int, error) {
	n, err := o.s.rdb.HLen(ctx, o.hash).Result()
	if err != nil {
		return 0, fmt.Errorf("redis outbox: len: %w", err)
	}
	return int(n), nil
}

func redisEntryOf(e OutboxEntry) redisEntry {
	return redisEntry{ID: e.ID, Target: e.Target, Body: e.Body, Attempts: e.Attempts,
		Created: redisTime(e.Created), LastError: e.LastError}
}

// SetRedisLogger sends the messages of the Redis client library to log,
// at debug level. They are process-wide, and repeat for every command
// while Redis is down; Accounts logs an outage once per interval.
func SetRedisLogger(log *zap.Logger) {
	redis.SetLogger(redisLogger{log.WithOptions(zap.AddCallerSkip(2))})
}

type redisLogger struct{ log *zap.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	if ce := l.log.Check(zap.DebugLevel, "redis client"); ce != nil {
		ce.Write(zap.String("message", fmt.Sprintf(format, v...)))
	}
}
