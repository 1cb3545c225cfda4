package lookup_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/authbl-milter/authbl-milter/lookup"
	"github.com/authbl-milter/authbl-milter/lookup/zoneserver"
)

func (f *fixture) state(t *testing.T) lookup.HealthState {
	t.Helper()
	return f.checker.Health()[0].State
}

func (f *fixture) health(t *testing.T) {
	t.Helper()
	f.checker.CheckHealth(context.Background())
}

// TestHealthListThatListsEverything: a list that starts listing 127.0.0.1
// is logged, and its listings turn into errors until it recovers; its
// other answers stay as they are.
func TestHealthListThatListsEverything(t *testing.T) {
	f := newFixture(t, time.Second)
	f.health(t)
	if s := f.state(t); s != lookup.HealthOK {
		t.Fatalf("state %v, want ok", s)
	}
	if f.logs.Len() > 0 && f.logs.FilterLevelExact(zapcore.ErrorLevel).Len() > 0 {
		t.Fatal("a healthy list logged an error")
	}

	must(t, f.zones.AddIP(ipZone, "127.0.0.1", "127.0.0.4"))
	f.health(t)
	if s := f.state(t); s != lookup.HealthListsEverything {
		t.Fatalf("state %v, want lists_everything", s)
	}
	errs := f.logs.FilterLevelExact(zapcore.ErrorLevel).FilterField(zap.String("list", "authbl"))
	if errs.Len() != 1 || !strings.Contains(errs.All()[0].Message, "ignored") {
		t.Fatalf("error lines %v, want one saying the listings are ignored", errs.All())
	}

	a := f.one(t, lookup.KindIP, "192.0.2.66")
	if a.Result != lookup.Error || !errors.Is(a.Err, lookup.ErrListOutOfService) {
		t.Fatalf("listed IP from a list that lists everything: %v (%v), want an error", a.Result, a.Err)
	}
	if a := f.one(t, lookup.KindIP, "192.0.2.254"); a.Result != lookup.Unexpected {
		t.Fatalf("error code answer: %v, want unexpected as before", a.Result)
	}

	// Recovered: listings count again, and the recovery is logged.
	must(t, f.zones.AddIP(ipZone, "127.0.0.1")) // no codes: NXDOMAIN again
	f.health(t)
	if s := f.state(t); s != lookup.HealthOK {
		t.Fatalf("state %v, want ok", s)
	}
	if a := f.one(t, lookup.KindIP, "192.0.2.66"); a.Result != lookup.Listed {
		t.Fatalf("after recovery: %v (%v), want listed", a.Result, a.Err)
	}
	if f.logs.FilterMessage("list healthy again").Len() != 1 {
		t.Fatal("the recovery was not logged")
	}
}

func TestHealthStates(t *testing.T) {
	tests := []struct {
		name   string
		break_ func(f *fixture)
		want   lookup.HealthState
		level  zapcore.Level
	}{
		{"unreachable", func(f *fixture) { f.zones.SetBehavior(ipZone, zoneserver.Silent) },
			lookup.HealthUnreachable, zapcore.WarnLevel},
		{"refused", func(f *fixture) { f.zones.SetBehavior(ipZone, zoneserver.Refused) },
			lookup.HealthFailing, zapcore.ErrorLevel},
		{"test point gone", func(f *fixture) { must(t, f.zones.AddIP(ipZone, "127.0.0.2")) },
			lookup.HealthFailing, zapcore.ErrorLevel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, 200*time.Millisecond)
			f.health(t)
			before := f.checker.Health()[0]
			tt.break_(f)
			f.health(t)
			h := f.checker.Health()[0]
			if h.State != tt.want || h.Detail == "" || h.List != "authbl" {
				t.Fatalf("health %+v, want %v with a detail", h, tt.want)
			}
			if !h.Since.After(before.Since) || h.Checked.Before(h.Since) {
				t.Fatalf("since %v (before %v), checked %v", h.Since, before.Since, h.Checked)
			}
			logged := f.logs.FilterLevelExact(tt.level).FilterField(zap.String("list", "authbl"))
			if logged.Len() != 1 {
				t.Fatalf("%d lines at %v naming the list, want 1", logged.Len(), tt.level)
			}
			// The same state again is not logged again, and keeps its Since.
			f.health(t)
			if n := f.logs.FilterLevelExact(tt.level).Len(); n != 1 {
				t.Fatalf("%d lines after the same result twice, want 1", n)
			}
			if again := f.checker.Health()[0]; again.Since != h.Since {
				t.Fatalf("since moved from %v to %v without a change", h.Since, again.Since)
			}
		})
	}
}

// TestHealthSelfTestSkipsCache: the self-test asks the server even when
// the answers are cached, and a recovery drops what the cache kept while
// the list listed everything.
func TestHealthSelfTestSkipsCache(t *testing.T) {
	f := newFixture(t, time.Second)
	dns, err := lookup.NewDNSClient([]string{f.zones.Addr()}, time.Second)
	must(t, err)
	cache := lookup.NewCache(dns, lookup.CacheOptions{Size: 100, MinTTL: time.Hour, MaxTTL: time.Hour})
	c := lookup.NewChecker([]*lookup.List{f.ipList}, cache, nil)

	c.CheckHealth(context.Background())
	n := len(f.zones.Queries())
	c.CheckHealth(context.Background())
	if got := len(f.zones.Queries()); got != 2*n {
		t.Fatalf("%d queries after two self-tests of %d, want %d: the cache answered", got, n, 2*n)
	}
	if st, ok := c.CacheStats(); !ok || st.Entries != 0 {
		t.Fatalf("cache stats %+v, %v: the self-test filled the cache", st, ok)
	}

	// Broken: everything listed, and 198.51.100.9's listing is cached.
	must(t, f.zones.AddIP(ipZone, "127.0.0.1", "127.0.0.4"))
	must(t, f.zones.AddIP(ipZone, "198.51.100.9", "127.0.0.4"))
	c.CheckHealth(context.Background())
	ctx := context.Background()
	if a := c.Check(ctx, lookup.KindIP, "198.51.100.9")[0]; a.Result != lookup.Error {
		t.Fatalf("%v, want an error while the list lists everything", a.Result)
	}
	// Repaired: the cached listing must not come back.
	must(t, f.zones.AddIP(ipZone, "127.0.0.1"))
	must(t, f.zones.AddIP(ipZone, "198.51.100.9"))
	c.CheckHealth(ctx)
	if a := c.Check(ctx, lookup.KindIP, "198.51.100.9")[0]; a.Result != lookup.Clean {
		t.Fatalf("%v after recovery, want clean: the cache kept a listing from the broken list",
			a.Result)
	}
}

// TestRunHealth: the background loop finds a list that starts listing
// everything without being asked, and stops with its context.
func TestRunHealth(t *testing.T) {
	f := newFixture(t, 200*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		f.checker.RunHealth(ctx, 20*time.Millisecond)
		close(done)
	}()
	waitFor(t, func() bool { return f.state(t) == lookup.HealthOK })
	must(t, f.zones.AddIP(ipZone, "127.0.0.1", "127.0.0.4"))
	waitFor(t, func() bool { return f.state(t) == lookup.HealthListsEverything })
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunHealth did not stop with its context")
	}

	// An interval of 0 runs nothing.
	c := lookup.NewChecker(nil, nil, nil)
	c.RunHealth(context.Background(), 0)
}

func TestHealthBeforeAnyTest(t *testing.T) {
	f := newFixture(t, time.Second)
	h := f.checker.Health()
	if len(h) != 2 || h[0].State != lookup.HealthUnknown || h[0].List != "authbl" ||
		!h[0].Since.IsZero() {
		t.Fatalf("health %+v", h)
	}
	// Unknown is not "lists everything": listings count.
	if a := f.one(t, lookup.KindIP, "192.0.2.66"); a.Result != lookup.Listed {
		t.Fatalf("%v", a.Result)
	}
}

func TestHealthFirstResultLogging(t *testing.T) {
	f := newFixture(t, time.Second)
	core, logs := observer.New(zapcore.DebugLevel)
	c := lookup.NewChecker(f.checker.Lists(), mustDNS(t, f.zones.Addr()), zap.New(core))
	c.CheckHealth(context.Background())
	if logs.FilterLevelExact(zapcore.InfoLevel).Len()+logs.FilterLevelExact(zapcore.ErrorLevel).Len() != 0 {
		t.Fatalf("a first healthy result was logged: %v", logs.All())
	}
}

func mustDNS(t *testing.T, addr string) *lookup.DNSClient {
	t.Helper()
	c, err := lookup.NewDNSClient([]string{addr}, time.Second)
	must(t, err)
	return c
}
