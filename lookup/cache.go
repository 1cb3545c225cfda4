package lookup

import (
	"container/list"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Cache is a Resolver that keeps the answers of another one for as long
// as their TTL says, within a floor and a ceiling. A positive answer lives
// for the smallest TTL of its A records; NXDOMAIN and an answer without A
// records live for the TTL of the zone's SOA record, which Reply.TTL
// carries (RFC 2308). Failures (errors, SERVFAIL, REFUSED) are not kept.
//
// The cache holds at most Size names and forgets the least recently used
// first. Lookups of a name already being asked are merged: they wait for
// the one query in flight, which runs until its answer arrives or every
// caller waiting for it has given up.
type Cache struct {
	next Resolver
	opts CacheOptions

	mu      sync.Mutex
	items   map[string]*list.Element // of *cacheEntry
	lru     *list.List               // most recently used first
	flights map[string]*flight

	hits, misses, merged atomic.Uint64
}

// CacheOptions configures a Cache.
type CacheOptions struct {
	// Size is the most names kept; it must be at least 1.
	Size int
	// MinTTL and MaxTTL bound how long an answer is kept, whatever its
	// TTL. An answer whose bounded TTL is 0 is not kept.
	MinTTL, MaxTTL time.Duration
	// Now returns the time; nil means time.Now. Tests set it.
	Now func() time.Time
}

// CacheStats counts what a Cache did.
type CacheStats struct {
	Hits    uint64 // answered from the cache
	Misses  uint64 // not in the cache (or expired), so asked
	Merged  uint64 // misses that joined a query already in flight
	Entries int    // names held now
}

type cacheEntry struct {
	name    string
	reply   Reply
	expires time.Time
}

type flight struct {
	done    chan struct{}
	reply   Reply
	err     error
	waiters int
	cancel  context.CancelFunc
}

// NewCache returns a cache in front of next.
func NewCache(next Resolver, o CacheOptions) *Cache {
	if o.Size < 1 {
		o.Size = 1
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxTTL < o.MinTTL {
		o.MaxTTL = o.MinTTL
	}
	return &Cache{
		next:    next,
		opts:    o,
		items:   make(map[string]*list.Element),
		lru:     list.New(),
		flights: make(map[string]*flight),
	}
}

type noCacheKey struct{}

// WithoutCache returns a context whose lookups skip every Cache and ask
// the servers, as the self-test must: a cached answer says nothing about
// the list's health now.
func WithoutCache(ctx context.Context) context.Context {
	return context.WithValue(ctx, noCacheKey{}, true)
}

func skipCache(ctx context.Context) bool {
	v, _ := ctx.Value(noCacheKey{}).(bool)
	return v
}

// Peek implements Peeker: it returns a name's answer when the cache holds
// it and it has not expired, counting a hit. A name it does not hold is
// not counted: the LookupA that follows counts the miss. The Reply's A
// slice is shared with the cache: callers must not modify it.
func (c *Cache) Peek(name string) (Reply, bool) {
	key := strings.ToLower(dns.Fqdn(name))
	c.mu.Lock()
	r, ok := c.hit(key, c.opts.Now())
	c.mu.Unlock()
	return r, ok
}

// hit returns the unexpired answer for key, counting a hit, and forgets
// an expired one. c.mu must be held.
func (c *Cache) hit(key string, now time.Time) (Reply, bool) {
	el, ok := c.items[key]
	if !ok {
		return Reply{}, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.remove(el)
		return Reply{}, false
	}
	c.lru.MoveToFront(el)
	c.hits.Add(1)
	r := e.reply
	r.TTL = uint32(e.expires.Sub(now) / time.Second)
	return r, true
}

// LookupA implements Resolver. The Reply's A slice is shared with the
// cache: callers must not modify it.
func (c *Cache) LookupA(ctx context.Context, name string) (Reply, error) {
	if skipCache(ctx) {
		return c.next.LookupA(ctx, name)
	}
	key := strings.ToLower(dns.Fqdn(name))

	c.mu.Lock()
	if r, ok := c.hit(key, c.opts.Now()); ok {
		c.mu.Unlock()
		return r, nil
	}
	c.misses.Add(1)
	f, ok := c.flights[key]
	if !ok && ctx.Err() != nil {
		c.mu.Unlock()
		return Reply{}, fmt.Errorf("dns: %w", scrub(ctx.Err()))
	}
	if ok {
		c.merged.Add(1)
	} else {
		// The query belongs to no caller: it keeps the first caller's
		// values (the logger), not its cancellation.
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{done: make(chan struct{}), cancel: cancel}
		c.flights[key] = f
		go c.ask(fctx, key, f)
	}
	f.waiters++
	c.mu.Unlock()

	select {
	case <-f.done:
		return f.reply, f.err
	case <-ctx.Done():
		c.mu.Lock()
		if f.waiters--; f.waiters == 0 {
			f.cancel() // nobody wants the answer any more
			if c.flights[key] == f {
				delete(c.flights, key)
			}
		}
		c.mu.Unlock()
		return Reply{}, fmt.Errorf("dns: %w", scrub(ctx.Err()))
	}
}

// ask runs the query of a flight and keeps a usable answer.
func (c *Cache) ask(ctx context.Context, key string, f *flight) {
	r, err := c.next.LookupA(ctx, key)
	f.cancel()

	c.mu.Lock()
	f.reply, f.err = r, err
	if c.flights[key] == f {
		delete(c.flights, key)
	}
	if ttl := c.ttl(r, err); ttl > 0 {
		c.store(key, r, c.opts.Now().Add(ttl))
	}
	c.mu.Unlock()
	close(f.done)
}

// ttl returns how long to keep an answer: 0 for a failure.
func (c *Cache) ttl(r Reply, err error) time.Duration {
	if err != nil || (r.Rcode != dns.RcodeSuccess && r.Rcode != dns.RcodeNameError) {
		return 0
	}
	d := time.Duration(r.TTL) * time.Second
	return min(max(d, c.opts.MinTTL), c.opts.MaxTTL)
}

// store keeps an answer; the caller holds c.mu.
func (c *Cache) store(key string, r Reply, expires time.Time) {
	if el, ok := c.items[key]; ok {
		e := el.Value.(*cacheEntry)
		e.reply, e.expires = r, expires
		c.lru.MoveToFront(el)
		return
	}
	c.items[key] = c.lru.PushFront(&cacheEntry{name: key, reply: r, expires: expires})
	for c.lru.Len() > c.opts.Size {
		c.remove(c.lru.Back())
	}
}

// remove drops an entry; the caller holds c.mu.
func (c *Cache) remove(el *list.Element) {
	delete(c.items, el.Value.(*cacheEntry).name)
	c.lru.Remove(el)
}

// PurgeZone forgets every answer for a name under zone and returns how
// many there were. The Checker calls it when a list's health changes, so
// that answers given while the list was broken are not served after it
// recovers.
func (c *Cache) PurgeZone(zone string) int {
	suffix := "." + strings.ToLower(dns.Fqdn(zone))
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for name, el := range c.items {
		if strings.HasSuffix(name, suffix) {
			c.remove(el)
			n++
		}
	}
	return n
}

// Stats returns the counters and the number of names held.
func (c *Cache) Stats() CacheStats {
	c.mu.Lock()
	n := c.lru.Len()
	c.mu.Unlock()
	return CacheStats{
		Hits:    c.hits.Load(),
		Misses:  c.misses.Load(),
		Merged:  c.merged.Load(),
		Entries: n,
	}
}
