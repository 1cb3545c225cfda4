package lookup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// TestStatus is the outcome of a list's self-test.
type TestStatus int

// The self-test outcomes.
const (
	// TestOK: the list answered as documented.
	TestOK TestStatus = iota
	// TestFailed: a wrong answer, REFUSED, or a list that lists
	// everything. The list must not be used.
	TestFailed
	// TestUnreachable: no answer in time. Worth a warning and a retry,
	// not a refusal to start.
	TestUnreachable
)

// String names the status.
func (s TestStatus) String() string {
	switch s {
	case TestOK:
		return "ok"
	case TestFailed:
		return "failed"
	default:
		return "unreachable"
	}
}

// TestResult is the self-test outcome of one list.
type TestResult struct {
	List   string
	Status TestStatus
	Detail string // what was wrong, empty when Status is TestOK
	// ListsEverything: the list lists the negative probe (Status is
	// TestFailed). Its listings are ignored until it recovers.
	ListsEverything bool
}

// Negative probes: items no sane list lists. An IP list that lists
// 127.0.0.1 lists the world; the recipient probe is under .invalid.
const (
	probeIP        = "127.0.0.1"
	probeRecipient = "authbl-milter-selftest@example.invalid"
)

// SelfTest checks every list: the negative probe must not be listed, and
// the test point, where the list has one, must be listed (with TestExpect
// among the codes, where set). It asks the servers, never a Cache, and
// records each list's health (see List.Health).
func (c *Checker) SelfTest(ctx context.Context) []TestResult {
	results, _ := c.selfTestAll(ctx)
	return results
}

// selfTestAll runs SelfTest and also returns each list's health before
// and after.
func (c *Checker) selfTestAll(ctx context.Context) ([]TestResult, [][2]Health) {
	ctx = WithoutCache(ctx)
	results := make([]TestResult, len(c.lists))
	changes := make([][2]Health, len(c.lists))
	var wg sync.WaitGroup
	for i, l := range c.lists {
		wg.Go(func() {
			results[i] = c.selfTest(ctx, l)
			before, after := l.setHealth(results[i], time.Now())
			changes[i] = [2]Health{before, after}
		})
	}
	wg.Wait()
	return results, changes
}

func (c *Checker) selfTest(ctx context.Context, l *List) TestResult {
	r := TestResult{List: l.Name}
	fail := func(s TestStatus, format string, args ...any) TestResult {
		r.Status, r.Detail = s, fmt.Sprintf(format, args...)
		return r
	}

	// The probe first: a list that lists everything also lists its test
	// point, and that is the finding that matters.
	probe := probeIP
	if l.Kind == KindRecipient {
		probe = probeRecipient
	}
	a := c.query(ctx, l, probe)
	switch a.Result {
	case Error:
		return fail(errorStatus(a.Err), "probe %s: %v", probe, a.Err)
	case Listed:
		r.ListsEverything = true
		return fail(TestFailed, "lists %s (%s): the list answers for everything",
			probe, a.CodesString())
	}

	if l.TestPoint != "" {
		item := l.TestPoint
		if l.Kind == KindRecipient {
			n, err := NormalizeRecipient(item)
			if err != nil {
				return fail(TestFailed, "test point: %v", err)
			}
			item = n
		}
		a := c.query(ctx, l, item)
		switch {
		case a.Result == Error:
			return fail(errorStatus(a.Err), "test point %s: %v", l.TestPoint, a.Err)
		case a.Result != Listed:
			return fail(TestFailed, "test point %s answered %s (%s), want listed",
				l.TestPoint, a.Result, a.CodesString())
		case l.TestExpect.IsValid() && !slices.Contains(a.Codes, l.TestExpect):
			return fail(TestFailed, "test point %s answered %s, want %s",
				l.TestPoint, a.CodesString(), l.TestExpect)
		}
	}

	return r
}

// NoAnswer reports whether err is a lookup that got no answer (a timeout
// or an unreachable server), as opposed to an answer that was wrong.
func NoAnswer(err error) bool {
	return errors.Is(err, errTimeout) || errors.Is(err, errUnreachable) ||
		errors.Is(err, context.DeadlineExceeded)
}

func errorStatus(err error) TestStatus {
	if NoAnswer(err) {
		return TestUnreachable
	}
	return TestFailed
}
