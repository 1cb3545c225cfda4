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
// It returns when all lists have answered or ctx is done. Each list is
// asked through its resolver, cache included; a context made by
// WithoutCache bypasses the cache. Start is the same, for callers that
// want the answers held in memory at once and the others later.
func (c *Checker) Check(ctx context.Context, k Kind, item string) []Answer {
	lists := c.ofKind(k)
	lk := &Lookup{c: c, item: item, lists: lists, answers: make([]Answer, len(lists))}
	for i := range lists {
		lk.todo = append(lk.todo, i)
	}
	return lk.Wait(ctx)
}

// ofKind returns the lists of kind k, in order.
func (c *Checker) ofKind(k Kind) []*List {
	var lists []*List
	for _, l := range c.lists {
		if l.Kind == k {
			lists = append(lists, l)
		}
	}
	return lists
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

// Lookup is one item being checked against every list of its kind, as
// started by Checker.Start: the lists that held their answer in memory
// have answered, the others are asked by Wait.
type Lookup struct {
	c       *Checker
	item    string
	lists   []*List
	answers []Answer
	todo    []int // indexes of the lists still to ask
}

// Start checks item against every list of kind k that holds its answer
// already (in the cache, or in a local file), at once and without a
// goroutine; Wait asks the others. Those lookups log through log, or the
// checker's logger when log is nil.
func (c *Checker) Start(k Kind, item string, log *zap.Logger) *Lookup {
	if log == nil {
		log = c.log
	}
	lk := &Lookup{c: c, item: item, lists: c.ofKind(k)}
	lk.answers = make([]Answer, len(lk.lists))
	for i, l := range lk.lists {
		if !c.peek(&lk.answers[i], l, item, log) {
			lk.todo = append(lk.todo, i)
		}
	}
	return lk
}

// Ready reports whether every list has answered, so that Wait would
// return at once.
func (lk *Lookup) Ready() bool { return len(lk.todo) == 0 }

// Wait asks the lists that have not answered yet, in parallel, and
// returns one answer per list, in list order. It returns when all lists
// have answered or ctx is done.
func (lk *Lookup) Wait(ctx context.Context) []Answer {
	switch len(lk.todo) {
	case 0:
	case 1: // the common case: no goroutine needed
		i := lk.todo[0]
		lk.answers[i] = lk.c.Query(ctx, lk.lists[i], lk.item)
	default:
		var wg sync.WaitGroup
		for _, i := range lk.todo {
			wg.Go(func() { lk.answers[i] = lk.c.Query(ctx, lk.lists[i], lk.item) })
		}
		wg.Wait()
	}
	lk.todo = nil
	return lk.answers
}

// peek answers a from memory when list l's source can, and reports
// whether it did.
func (c *Checker) peek(a *Answer, l *List, item string, log *zap.Logger) bool {
	p, ok := c.source(l).(Peeker)
	if !ok {
		return false
	}
	start := time.Now()
	name, err := l.QueryName(item)
	if err != nil {
		return false // left to Query, which reports it
	}
	reply, ok := p.Peek(name)
	if !ok {
		return false
	}
	*a = Answer{List: l.Name, Item: item}
	c.classify(a, l, name, reply, nil, start, log)
	c.finish(a, l, start)
	return true
}

// Query asks one list about one item. A listing from a list that the
// self-test found listing everything is returned as an error wrapping
// ErrListOutOfService: it never counts, and follows on_error.
func (c *Checker) Query(ctx context.Context, l *List, item string) Answer {
	start := time.Now()
	a := c.query(ctx, l, item)
	c.finish(&a, l, start)
	return a
}

// finish applies the self-test's verdict on the list and reports the
// lookup to the observer.
func (c *Checker) finish(a *Answer, l *List, start time.Time) {
	if a.Result == Listed && l.listsEverything() {
		outOfService(a)
	}
	if c.observe != nil {
		c.observe(l.Name, a.Result, time.Since(start))
	}
}

// source is where list l is asked: its own source (a local file) or the
// checker's resolver.
func (c *Checker) source(l *List) Resolver {
	if l.source != nil {
		return l.source
	}
	return c.resolver
}

// query asks one list about one item.
func (c *Checker) query(ctx context.Context, l *List, item string) Answer {
	a := Answer{List: l.Name, Item: item}
	name, err := l.QueryName(item)
	if err != nil {
		a.Err = err
		return a
	}
	start := time.Now()
	reply, err := c.source(l).LookupA(ctx, name)
	c.classify(&a, l, name, reply, err, start, c.logger(ctx))
	return a
}

// classify turns the reply to the query name of a into its result, and
// logs it.
func (c *Checker) classify(a *Answer, l *List, name string, reply Reply, err error,
	start time.Time, log *zap.Logger) {
	a.Result, a.Err = l.Classify(reply, err)
	a.Codes = reply.A

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
			zap.String("item", a.Item),
			zap.String("codes", a.CodesString()))
	}
}

type stringer func() string

func (f stringer) String() string { return f() }
