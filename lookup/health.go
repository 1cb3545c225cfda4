package lookup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// HealthState is what the latest self-test found about a list.
type HealthState int32

// The health states.
const (
	// HealthUnknown: not tested yet.
	HealthUnknown HealthState = iota
	// HealthOK: the list answered its test point and probe as it should.
	HealthOK
	// HealthUnreachable: the self-test got no answer. The list is still
	// asked; its lookups fail on their own and follow on_error.
	HealthUnreachable
	// HealthFailing: a wrong answer for the test point, or REFUSED. The
	// list is still asked; an operator must look at it.
	HealthFailing
	// HealthListsEverything: the list lists an item no list lists
	// (127.0.0.1). Its listings are ignored, as errors, until a
	// self-test finds it sane again.
	HealthListsEverything
)

// String names the state for logs and metrics.
func (s HealthState) String() string {
	switch s {
	case HealthOK:
		return "ok"
	case HealthUnreachable:
		return "unreachable"
	case HealthFailing:
		return "failing"
	case HealthListsEverything:
		return "lists_everything"
	default:
		return "unknown"
	}
}

// Health is the state of one list.
type Health struct {
	List    string
	State   HealthState
	Detail  string    // what the self-test found wrong; empty when OK
	Since   time.Time // when the list entered State (zero: never tested)
	Checked time.Time // the latest self-test (zero: never tested)
}

// ErrListOutOfService is wrapped by the error of a listing that was
// ignored because its list lists everything.
var ErrListOutOfService = errors.New("list out of service")

// Health returns the list's state. It is safe for concurrent use, for
// metrics and readiness checks.
func (l *List) Health() Health {
	if h := l.health.Load(); h != nil {
		return *h
	}
	return Health{List: l.Name}
}

// setHealth records a self-test result.
func (l *List) setHealth(r TestResult, now time.Time) (before, after Health) {
	before = l.Health()
	after = Health{List: l.Name, Detail: r.Detail, Checked: now, Since: now}
	switch {
	case r.Status == TestOK:
		after.State = HealthOK
	case r.Status == TestUnreachable:
		after.State = HealthUnreachable
	case r.ListsEverything:
		after.State = HealthListsEverything
	default:
		after.State = HealthFailing
	}
	if before.State == after.State {
		after.Since = before.Since
	}
	l.health.Store(&after)
	return before, after
}

// listsEverything reports whether the list's listings are to be ignored.
func (l *List) listsEverything() bool {
	h := l.health.Load()
	return h != nil && h.State == HealthListsEverything
}

// Health returns the state of every list, in list order.
func (c *Checker) Health() []Health {
	out := make([]Health, len(c.lists))
	for i, l := range c.lists {
		out[i] = l.Health()
	}
	return out
}

// healthTimeout bounds one round of self-tests.
const healthTimeout = 10 * time.Second

// healthRetry is the longest wait for the next self-test while a list is
// not healthy, so that a list that did not answer at start is taken as
// healthy soon after it does.
const healthRetry = time.Minute

// RunHealth runs the self-test of every list every interval until ctx
// ends, and every minute at most while a list is not healthy, logging
// each change of a list's state (see CheckHealth). An interval of 0 or
// less runs nothing.
func (c *Checker) RunHealth(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		return
	}
	for {
		wait := interval
		for _, h := range c.Health() {
			if h.State != HealthOK {
				wait = min(wait, healthRetry)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		c.CheckHealth(ctx)
	}
}

// CheckHealth runs the self-test once and logs what changed: a list that
// recovered at info, one that stopped answering at warn, one that fails
// or lists everything at error. The first result of a list is logged
// only when it is bad (the start-up self-test reports the rest). A list
// whose state moves into or out of "lists everything" has its cached
// answers dropped, so that none given while it was broken outlives that.
func (c *Checker) CheckHealth(ctx context.Context) []TestResult {
	tctx, cancel := context.WithTimeout(ctx, healthTimeout)
	results, changes := c.selfTestAll(tctx)
	cancel()
	if ctx.Err() != nil {
		return results // shutting down: the results say nothing
	}
	for i, ch := range changes {
		c.logChange(c.lists[i], ch[0], ch[1])
	}
	return results
}

func (c *Checker) logChange(l *List, before, after Health) {
	if before.State == after.State && before.Detail == after.Detail {
		return
	}
	if (before.State == HealthListsEverything) != (after.State == HealthListsEverything) {
		if p, ok := c.resolver.(interface{ PurgeZone(string) int }); ok && l.source == nil {
			n := p.PurgeZone(l.Zone)
			c.log.Debug("cached answers dropped", zap.String("list", l.Name), zap.Int("names", n))
		}
	}
	fields := []zap.Field{zap.String("list", l.Name), zap.String("state", after.State.String()),
		zap.String("previous", before.State.String())}
	if after.Detail != "" {
		fields = append(fields, zap.String("problem", after.Detail))
	}
	switch after.State {
	case HealthOK:
		if before.State != HealthUnknown {
			c.log.Info("list healthy again", fields...)
		}
	case HealthUnreachable:
		c.log.Warn("list self-test got no answer; the list is still asked", fields...)
	case HealthListsEverything:
		c.log.Error("list answers for everything; its listings are ignored until it recovers",
			fields...)
	default:
		c.log.Error("list self-test failed; the list is still asked", fields...)
	}
}

// outOfService turns a listing from a list that lists everything into an
// error, which follows on_error like any failed lookup.
func outOfService(a *Answer) {
	a.Result = Error
	a.Err = fmt.Errorf("%w: the self-test found that it lists %s; listing ignored",
		ErrListOutOfService, probeIP)
}
