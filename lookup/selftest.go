package lookup

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
}

// Negative probes: items no sane list lists. An IP list that lists
// 127.0.0.1 lists the world; the recipient probe is under .invalid.
const (
	probeIP        = "127.0.0.1"
	probeRecipient = "authbl-milter-selftest@example.invalid"
)

// SelfTest checks every list: its test point, where it has one, must be
// listed (with TestExpect among the codes, where set), and the negative
// probe must not be listed.
func (c *Checker) SelfTest(ctx context.Context) []TestResult {
	results := make([]TestResult, len(c.lists))
	done := make(chan struct{})
	for i, l := range c.lists {
		go func() {
			results[i] = c.selfTest(ctx, l)
			done <- struct{}{}
		}()
	}
	for range c.lists {
		<-done
	}
	return results
}

func (c *Checker) selfTest(ctx context.Context, l *List) TestResult {
	r := TestResult{List: l.Name}
	fail := func(s TestStatus, format string, args ...any) TestResult {
		r.Status, r.Detail = s, fmt.Sprintf(format, args...)
		return r
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
		a := c.Query(ctx, l, item)
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

	probe := probeIP
	if l.Kind == KindRecipient {
		probe = probeRecipient
	}
	a := c.Query(ctx, l, probe)
	switch a.Result {
	case Error:
		return fail(errorStatus(a.Err), "probe %s: %v", probe, a.Err)
	case Listed:
		return fail(TestFailed, "lists %s (%s): the list answers for everything",
			probe, a.CodesString())
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
