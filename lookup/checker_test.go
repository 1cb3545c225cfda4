package lookup_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/authbl-milter/authbl-milter/lookup"
	"github.com/authbl-milter/authbl-milter/lookup/zoneserver"
)

const (
	ipZone   = "authbl.example.test"
	rcptZone = "authbl-rcpt.example.test"
)

// fixture is a zone server on loopback and a checker that asks it.
type fixture struct {
	zones   *zoneserver.Server
	checker *lookup.Checker
	logs    *observer.ObservedLogs
	ipList  *lookup.List
}

func newFixture(t *testing.T, dnsTimeout time.Duration) *fixture {
	t.Helper()
	z := zoneserver.New()
	must(t, z.AddIP(ipZone, "127.0.0.2", "127.0.0.4"))
	must(t, z.AddIP(ipZone, "192.0.2.66", "127.0.0.4"))
	must(t, z.AddIP(ipZone, "2001:db8::66", "127.0.0.4"))
	must(t, z.AddIP(ipZone, "192.0.2.254", "127.255.255.254"))
	must(t, z.AddIP(ipZone, "192.0.2.255", "127.255.255.255"))
	must(t, z.AddRecipient(rcptZone, "dropbox@example.net", "127.0.0.2"))
	must(t, z.Start("127.0.0.1:0"))
	t.Cleanup(func() { z.Close() })

	ipList := &lookup.List{Name: "authbl", Kind: lookup.KindIP, Zone: ipZone,
		Match:     []netip.Prefix{netip.MustParsePrefix("127.0.0.4/32")},
		TestPoint: "127.0.0.2", TestExpect: netip.MustParseAddr("127.0.0.4")}
	rcptList := &lookup.List{Name: "authbl-rcpt", Kind: lookup.KindRecipient, Zone: rcptZone}
	dns, err := lookup.NewDNSClient([]string{z.Addr()}, dnsTimeout)
	must(t, err)
	core, logs := observer.New(zapcore.DebugLevel)
	return &fixture{
		zones:   z,
		checker: lookup.NewChecker([]*lookup.List{ipList, rcptList}, dns, zap.New(core)),
		logs:    logs,
		ipList:  ipList,
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) one(t *testing.T, k lookup.Kind, item string) lookup.Answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	answers := f.checker.Check(ctx, k, item)
	if len(answers) != 1 {
		t.Fatalf("%d answers, want 1", len(answers))
	}
	return answers[0]
}

func TestCheckAgainstZoneServer(t *testing.T) {
	f := newFixture(t, time.Second)
	tests := []struct {
		name  string
		kind  lookup.Kind
		item  string
		want  lookup.Result
		codes string
	}{
		{"listed ipv4", lookup.KindIP, "192.0.2.66", lookup.Listed, "127.0.0.4"},
		{"listed ipv6", lookup.KindIP, "2001:db8::66", lookup.Listed, "127.0.0.4"},
		{"clean ipv4", lookup.KindIP, "192.0.2.1", lookup.Clean, "-"},
		{"clean ipv6", lookup.KindIP, "2001:db8::1", lookup.Clean, "-"},
		{"dropbox", lookup.KindRecipient, "dropbox@example.net", lookup.Listed, "127.0.0.2"},
		{"clean recipient", lookup.KindRecipient, "friend@example.org", lookup.Clean, "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := f.one(t, tt.kind, tt.item)
			if a.Result != tt.want || a.CodesString() != tt.codes {
				t.Fatalf("%s: %v %s (%v), want %v %s", tt.item, a.Result, a.CodesString(), a.Err,
					tt.want, tt.codes)
			}
		})
	}
}

// Cases 1 and 2: error codes are not listings, and a warning names the
// list and the code.
func TestCase1ErrorCode254NotListed(t *testing.T) {
	testErrorCodeNotListed(t, "192.0.2.254", "127.255.255.254")
}

func TestCase2ErrorCode255NotListed(t *testing.T) {
	testErrorCodeNotListed(t, "192.0.2.255", "127.255.255.255")
}

func testErrorCodeNotListed(t *testing.T, ip, code string) {
	f := newFixture(t, time.Second)
	a := f.one(t, lookup.KindIP, ip)
	if a.Result != lookup.Unexpected {
		t.Fatalf("result %v, want unexpected", a.Result)
	}
	warnings := f.logs.FilterLevelExact(zapcore.WarnLevel).FilterField(zap.String("list", "authbl"))
	if warnings.Len() != 1 {
		t.Fatalf("%d warnings naming the list, want 1", warnings.Len())
	}
	if got := warnings.All()[0].ContextMap()["codes"]; got != code {
		t.Fatalf("warning names codes %v, want %s", got, code)
	}
}

func TestFaultsNeverCountAsListing(t *testing.T) {
	tests := []struct {
		name     string
		behavior zoneserver.Behavior
		want     lookup.Result
	}{
		{"silent server", zoneserver.Silent, lookup.Error},
		{"servfail", zoneserver.ServFail, lookup.Error},
		{"refused", zoneserver.Refused, lookup.Error},
		{"malformed reply", zoneserver.Malformed, lookup.Error},
		{"truncated, retried over tcp", zoneserver.Truncated, lookup.Listed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, 300*time.Millisecond)
			f.zones.SetBehavior(ipZone, tt.behavior)
			start := time.Now()
			a := f.one(t, lookup.KindIP, "192.0.2.66")
			if a.Result != tt.want {
				t.Fatalf("result %v (%v), want %v", a.Result, a.Err, tt.want)
			}
			if tt.want == lookup.Error && a.Err == nil {
				t.Fatal("error result without an error")
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("took %v", d)
			}
		})
	}
}

func TestServerDownFailsOverToNext(t *testing.T) {
	f := newFixture(t, 300*time.Millisecond)
	// A port nothing answers on, first in the list.
	dead := zoneserver.New()
	must(t, dead.Start("127.0.0.1:0"))
	deadAddr := dead.Addr()
	dead.Close()

	dns, err := lookup.NewDNSClient([]string{deadAddr, f.zones.Addr()}, 300*time.Millisecond)
	must(t, err)
	c := lookup.NewChecker([]*lookup.List{f.ipList}, dns, nil)
	for i := range 4 { // rotation starts at each server in turn
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		a := c.Check(ctx, lookup.KindIP, "192.0.2.66")[0]
		cancel()
		if a.Result != lookup.Listed {
			t.Fatalf("query %d: %v (%v), want listed", i, a.Result, a.Err)
		}
	}
}

func TestContextBoundsSilentServer(t *testing.T) {
	f := newFixture(t, 5*time.Second)
	f.zones.SetBehavior(ipZone, zoneserver.Silent)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	a := f.checker.Check(ctx, lookup.KindIP, "192.0.2.66")[0]
	if a.Result != lookup.Error || !lookup.NoAnswer(a.Err) {
		t.Fatalf("%v (%v), want a no-answer error", a.Result, a.Err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("the 200ms context took %v to end the lookup", d)
	}
}

func TestSelfTest(t *testing.T) {
	t.Run("healthy", func(t *testing.T) {
		f := newFixture(t, time.Second)
		for _, r := range f.checker.SelfTest(context.Background()) {
			if r.Status != lookup.TestOK {
				t.Errorf("%s: %v %s", r.List, r.Status, r.Detail)
			}
		}
	})
	t.Run("lists everything", func(t *testing.T) {
		f := newFixture(t, time.Second)
		must(t, f.zones.AddIP(ipZone, "127.0.0.1", "127.0.0.4"))
		r := f.checker.SelfTest(context.Background())[0]
		if r.Status != lookup.TestFailed || !strings.Contains(r.Detail, "everything") {
			t.Fatalf("%v %s", r.Status, r.Detail)
		}
	})
	t.Run("test point missing", func(t *testing.T) {
		f := newFixture(t, time.Second)
		must(t, f.zones.AddIP(ipZone, "127.0.0.2", "127.0.0.3"))
		r := f.checker.SelfTest(context.Background())[0]
		if r.Status != lookup.TestFailed || !strings.Contains(r.Detail, "127.0.0.2") {
			t.Fatalf("%v %s", r.Status, r.Detail)
		}
	})
	t.Run("refused", func(t *testing.T) {
		f := newFixture(t, time.Second)
		f.zones.SetBehavior(ipZone, zoneserver.Refused)
		r := f.checker.SelfTest(context.Background())[0]
		if r.Status != lookup.TestFailed || !strings.Contains(r.Detail, "REFUSED") {
			t.Fatalf("%v %s", r.Status, r.Detail)
		}
	})
	t.Run("silent", func(t *testing.T) {
		f := newFixture(t, 200*time.Millisecond)
		f.zones.SetBehavior(ipZone, zoneserver.Silent)
		r := f.checker.SelfTest(context.Background())[0]
		if r.Status != lookup.TestUnreachable {
			t.Fatalf("%v %s", r.Status, r.Detail)
		}
	})
}

func TestSecretNeverInErrorsOrLogs(t *testing.T) {
	const key = "zzsecretkey123"
	f := newFixture(t, 200*time.Millisecond)
	z := key + "." + ipZone
	must(t, f.zones.AddIP(z, "192.0.2.66", "127.0.0.4"))
	l := &lookup.List{Name: "abusix", Kind: lookup.KindIP, Zone: z}
	l.SetSecret(key)
	dns, err := lookup.NewDNSClient([]string{f.zones.Addr()}, 200*time.Millisecond)
	must(t, err)
	core, logs := observer.New(zapcore.DebugLevel)
	c := lookup.NewChecker([]*lookup.List{l}, dns, zap.New(core))

	for _, b := range []zoneserver.Behavior{zoneserver.Normal, zoneserver.Silent,
		zoneserver.Malformed, zoneserver.Refused} {
		f.zones.SetBehavior(z, b)
		a := c.Check(context.Background(), lookup.KindIP, "192.0.2.66")[0]
		if a.Err != nil && strings.Contains(a.Err.Error(), key) {
			t.Fatalf("error shows the key: %v", a.Err)
		}
	}
	for _, e := range logs.All() {
		for k, v := range e.ContextMap() {
			if strings.Contains(e.Message, key) || strings.Contains(toString(v), key) {
				t.Fatalf("log field %s shows the key: %v", k, v)
			}
		}
	}
	if logs.Len() == 0 {
		t.Fatal("no debug lines were logged: the check above proved nothing")
	}
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	if e, ok := v.(error); ok {
		return e.Error()
	}
	return ""
}
