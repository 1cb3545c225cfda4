package lookup

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Checker asks every list of the right kind about an item, in parallel.
type Checker struct {
	lists    []*List
	resolver Resolver
	log      *zap.Logger
}

// NewChecker returns a Checker over lists. A nil logger logs nothing.
func NewChecker(lists []*List, r Resolver, log *zap.Logger) *Checker {
	if log == nil {
		log = zap.NewNop()
	}
	return &Checker{lists: lists, resolver: r, log: log}
}

// Lists returns the lists the checker asks.
func (c *Checker) Lists() []*List { return c.lists }

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

// Query asks one list about one item.
func (c *Checker) Query(ctx context.Context, l *List, item string) Answer {
	a := Answer{List: l.Name, Item: item}
	name, err := l.QueryName(item)
	if err != nil {
		a.Err = err
		return a
	}

	start := time.Now()
	reply, err := c.resolver.LookupA(ctx, name)
	a.Result, a.Err = l.Classify(reply, err)
	a.Codes = reply.A

	log := c.logger(ctx)
	log.Debug("lookup",
		zap.String("list", l.Name),
		zap.String("query", l.Redact(name)),
		zap.String("result", a.Result.String()),
		zap.Stringer("codes", stringer(a.CodesString)),
		zap.Duration("duration", time.Since(start)),
		zap.Error(a.Err))
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
