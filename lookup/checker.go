package lookup

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Checker asks every list of the right kind about an item, in parallel.
type Checker struct {
	lists    []*List
	resolver Resolver
	log      *zap.Logger
	observe  func(list string, r Result, d time.Duration)
}

// SetObserver makes the checker report every lookup, with its list, its
// result and how long it took (for metrics). Call it before the first
// lookup; f must be quick and safe for concurrent use.
func (c *Checker) SetObserver(f func(list string, r Result, d time.Duration)) {
	c.observe = f
}

// NewChecker returns a Checker over lists. Lists with a source of their
// own (a local file) are asked through it, the others through r, which
// may be nil when every list has one. A nil logger logs nothing.
func NewChecker(lists []*List, r Resolver, log *zap.Logger) *Checker {
	if log == nil {
		log = zap.NewNop()
	}
	return &Checker{lists: lists, resolver: r, log: log}
}

// Lists returns the lists the checker asks.
func (c *Checker) Lists() []*List { return c.lists }

// CacheStats returns the counters of the checker's Cache, and false when
// its resolver is no Cache.
func (c *Checker) CacheStats() (CacheStats, bool) {
	if cache, ok := c.resolver.(*Cache); ok {
		return cache.Stats(), true
	}
	return CacheStats{}, false
}

// HasKind reports whether any list is of kind k.
func (c *Checker) HasKind(k Kind) bool {
	for _, l := range c.lists {
		if l.Kind == k {
			return true
		}
	}
	return false
}

// Check asks every list of kind k about item (an IP address, or a
// normalised recipient) and returns one answer per list, in list order.
// It returns when all lists have answered or ctx is done.
func (c *Checker) Check(ctx context.Context, k Kind, item string) []Answer {
	var lists []*List
	for _, l := range c.lists {
		if l.Kind == k {
			lists = append(lists, l)
		}
	}
	answers := make([]Answer, len(lists))
	if len(lists) == 1 { // the common case: no goroutine needed
		answers[0] = c.Query(ctx, lists[0], item)
		return answers
	}
	var wg sync.WaitGroup
	for i, l := range lists {
		wg.Go(func() { answers[i] = c.Query(ctx, l, item) })
	}
	wg.Wait()
	return answers
}

type loggerKey struct{}

// WithLogger returns a context whose lookups log through log, so that
// their lines carry the fields of the transaction that asked.
func WithLogger(ctx context.Context, log *zap.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, log)
}

func (c *Checker) logger(ctx context.Context) *zap.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*zap.Logger); ok {
		return l
	}
	return c.log
}

// Query asks one list about one item. A listing from a list that the
// self-test found listing everything is returned as an error wrapping
// ErrListOutOfService: it never counts, and follows on_error.
func (c *Checker) Query(ctx context.Context, l *List, item string) Answer {
	start := time.Now()
	a := c.query(ctx, l, item)
	if a.Result == Listed && l.listsEverything() {
		outOfService(&a)
	}
	if c.observe != nil {
		c.observe(l.Name, a.Result, time.Since(start))
	}
	return a
}

// query asks one list about one item, through the list's own source (a
// local file) or the checker's resolver.
func (c *Checker) query(ctx context.Context, l *List, item string) Answer {
	a := Answer{List: l.Name, Item: item}
	name, err := l.QueryName(item)
	if err != nil {
		a.Err = err
		return a
	}

	r := c.resolver
	if l.source != nil {
		r = l.source
	}
	start := time.Now()
	reply, err := r.LookupA(ctx, name)
	a.Result, a.Err = l.Classify(reply, err)
	a.Codes = reply.A

	log := c.logger(ctx)
	if ce := log.Check(zapcore.DebugLevel, "lookup"); ce != nil {
		ce.Write(zap.String("list", l.Name),
			zap.String("query", l.Redact(name)),
			zap.String("result", a.Result.String()),
			zap.Stringer("codes", stringer(a.CodesString)),
			zap.Duration("duration", time.Since(start)),
			zap.Error(a.Err))
	}
	if a.Result == Unexpected {
		log.Warn("list answered a code outside its match set; not a listing",
			zap.String("list", l.Name),
			zap.String("item", item),
			zap.String("codes", a.CodesString()))
	}
	return a
}

type stringer func() string

func (f stringer) String() string { return f() }
