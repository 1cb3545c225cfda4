package milter_test

import (
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/authbl-milter/authbl-milter/lookup/zoneserver"
	"github.com/authbl-milter/authbl-milter/milter/mtasim"
)

// The cases of shared/cases/CASES.md that concern whole transactions.

// Case 1: an IP list answers 127.255.255.254: not listed, a warning names
// the list and the code, the mail continues.
func TestCase1ErrorCodeWarnsAndMailContinues(t *testing.T) {
	r := newRig(t, rigOptions{})
	wantAccept(t, r.send(authTx("a@example.com", errorIP, "x@example.org")))
	w := r.logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("outside its match set")
	if w.Len() != 1 {
		t.Fatalf("%d warnings, want 1", w.Len())
	}
	m := w.All()[0].ContextMap()
	if m["list"] != "authbl" || m["codes"] != "127.255.255.254" || m["conn"] == nil {
		t.Fatalf("warning fields %v", m)
	}
}

// Case 6: no {auth_authen} at MAIL FROM: unauthenticated, no lookups,
// accepted; and nothing was decided at connect time.
func TestCase6NoAuthMacroMeansUnauthenticated(t *testing.T) {
	r := newRig(t, rigOptions{})
	c := r.dial(listedIP) // the connect event alone decides nothing
	res := r.sendOn(c, mtasim.Transaction{ClientAddr: listedIP, Rcpts: []string{dropbox}})
	if !res.Accepted() || res.Stage != "mail" {
		t.Fatalf("got %q at %s, want accept at mail", res, res.Stage)
	}
	if n := len(r.zones.Queries()); n != 0 {
		t.Fatalf("%d DNS queries for unauthenticated mail", n)
	}
	// The same connection, now authenticated, is checked.
	wantReject(t, r.sendOn(c, authTx("a@example.com", listedIP, "x@example.org")))
}

// Case 8: an authenticated session from a listed IP: the IP list is
// queried (authenticated mail is exactly what is checked).
func TestCase8AuthenticatedSessionQueriesIPList(t *testing.T) {
	r := newRig(t, rigOptions{})
	wantReject(t, r.send(authTx("a@example.com", listedIP, "x@example.org")))
	want := "66.2.0.192." + ipZone + "."
	for _, q := range r.zones.Queries() {
		if q == want {
			return
		}
	}
	t.Fatalf("no query for %s in %v", want, r.zones.Queries())
}

// Case 9: two transactions on one connection, the second after the first
// was accepted (which makes the library rebuild its handler): the second
// still knows the client address and the login.
func TestCase9SecondTransactionOnConnection(t *testing.T) {
	r := newRig(t, rigOptions{})
	c := r.dial(listedIP)
	wantAccept(t, r.sendOn(c, authTx("ok@example.com", "198.51.100.1", "x@example.org")))
	wantReject(t, r.sendOn(c, authTx("bad@example.com", listedIP, "x@example.org")))
	// And after a reject, the next one is judged on its own facts.
	wantAccept(t, r.sendOn(c, authTx("ok@example.com", "198.51.100.1", "x@example.org")))
	// The previous login does not leak into an unauthenticated one.
	res := r.sendOn(c, mtasim.Transaction{ClientAddr: listedIP, Rcpts: []string{dropbox}})
	if !res.Accepted() || res.Stage != "mail" {
		t.Fatalf("unauthenticated after authenticated: %q at %s", res, res.Stage)
	}
	if _, ok := r.flagged("ok@example.com"); ok {
		t.Fatal("the clean account was flagged")
	}
}

// Case 10: the DNS server does not answer: the transaction is answered
// well before the MTA's milter timeout (Postfix: 30 s), per on_error.
func TestCase10SilentDNSAnsweredInTime(t *testing.T) {
	for _, tempfail := range []bool{false, true} {
		r := newRig(t, rigOptions{tempfail: tempfail, timeout: time.Second})
		r.zones.SetBehavior(ipZone, zoneserver.Silent)
		r.zones.SetBehavior(rcptZone, zoneserver.Silent)
		start := time.Now()
		res := r.send(authTx("a@example.com", listedIP, dropbox, "x@example.org"))
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("answered after %v", d)
		}
		if tempfail && res.SMTPCode != 451 {
			t.Fatalf("tempfail policy: got %q", res)
		}
		if !tempfail {
			wantAccept(t, res)
		}
	}
}
