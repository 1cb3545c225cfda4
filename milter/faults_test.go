package milter_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/lookup/zoneserver"
	"github.com/authbl-milter/authbl-milter/milter/mtasim"
)

// Faults of the lists, each against a DNS server the test controls, each
// through the milter protocol. None may count as a listing. A failed
// lookup follows milter.on_error; an answer that is no listing (an error
// code, an address outside 127/8) lets the mail continue and is logged as
// a warning, as the README and the field cases say.

// wantOnError checks the answer a transaction gets when lookups failed.
func wantOnError(t *testing.T, res mtasim.Result, tempfail bool) {
	t.Helper()
	if tempfail {
		if !res.Tempfailed() || res.SMTPCode != 451 {
			t.Fatalf("got %q at %s, want 451 (on_error = tempfail)", res, res.Stage)
		}
		return
	}
	wantAccept(t, res)
}

func onErrorName(tempfail bool) string {
	if tempfail {
		return "tempfail"
	}
	return "accept"
}

// TestFaultSilentServerSlowerThanMilterTimeout (field case 10, beyond
// TestCase10SilentDNSAnsweredInTime): the DNS server never answers and
// each DNS exchange may wait 10 s, far longer than milter.timeout; the
// transaction still gets its answer within milter.timeout (plus the grace
// the decision allows), following on_error, well before Postfix's 30 s
// milter_command_timeout.
func TestFaultSilentServerSlowerThanMilterTimeout(t *testing.T) {
	for _, tempfail := range []bool{false, true} {
		t.Run(onErrorName(tempfail), func(t *testing.T) {
			const timeout = 500 * time.Millisecond
			r := newRig(t, rigOptions{tempfail: tempfail, timeout: timeout,
				dnsTimeout: 10 * time.Second})
			r.zones.SetBehavior(ipZone, zoneserver.Silent)
			r.zones.SetBehavior(rcptZone, zoneserver.Silent)
			c := r.dial(listedIP)

			start := time.Now()
			res := r.sendOn(c, authTx("a@example.com", listedIP, dropbox, "x@example.org"))
			elapsed := time.Since(start)
			wantOnError(t, res, tempfail)
			// Generous: the point is "bounded by milter.timeout", not
			// "after 10 s of DNS timeout".
			if elapsed > timeout+2*time.Second {
				t.Fatalf("answered after %v; milter.timeout is %v", elapsed, timeout)
			}
			if _, ok := r.flagged("a@example.com"); ok {
				t.Fatal("a silent server flagged the account")
			}
			if r.logs.FilterMessage("lookups failed").Len() != 1 {
				t.Fatal("the failure was not logged")
			}
		})
	}
}

// TestFaultsFollowOnError: every kind of failed lookup, under both
// policies, for the IP list and the recipient list at once.
func TestFaultsFollowOnError(t *testing.T) {
	faults := []struct {
		name     string
		behavior zoneserver.Behavior
	}{
		{"servfail", zoneserver.ServFail},
		{"refused", zoneserver.Refused},
		{"malformed reply", zoneserver.Malformed},
		{"silent", zoneserver.Silent},
	}
	for _, f := range faults {
		for _, tempfail := range []bool{false, true} {
			t.Run(f.name+", "+onErrorName(tempfail), func(t *testing.T) {
				r := newRig(t, rigOptions{tempfail: tempfail, timeout: 400 * time.Millisecond})
				r.zones.SetBehavior(ipZone, f.behavior)
				r.zones.SetBehavior(rcptZone, f.behavior)
				res := r.send(authTx("a@example.com", listedIP, dropbox))
				wantOnError(t, res, tempfail)
				if _, ok := r.flagged("a@example.com"); ok {
					t.Fatal("a failed lookup flagged the account")
				}
				if len(r.detections()) != 0 {
					t.Fatal("a failed lookup was logged as a detection")
				}
				if r.logs.FilterMessage("lookups failed").Len() != 1 {
					t.Fatal("the failure was not logged")
				}
			})
		}
	}
}

// TestFaultAnswersThatAreNoListing: answers outside the list's match set
// never count, and the mail goes on even under on_error = tempfail, with a
// warning that names the list and the code.
func TestFaultAnswersThatAreNoListing(t *testing.T) {
	codes := []struct{ name, code string }{
		{"outside 127/8", "192.0.2.1"},
		{"error code .252", "127.255.255.252"},
		{"error code .254", "127.255.255.254"},
		{"error code .255", "127.255.255.255"},
	}
	for _, c := range codes {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, rigOptions{tempfail: true})
			const client, rcpt = "198.51.100.77", "odd@example.org"
			if err := r.zones.AddIP(ipZone, client, c.code); err != nil {
				t.Fatal(err)
			}
			if err := r.zones.AddRecipient(rcptZone, rcpt, c.code); err != nil {
				t.Fatal(err)
			}
			wantAccept(t, r.send(authTx("a@example.com", client, rcpt)))
			if _, ok := r.flagged("a@example.com"); ok {
				t.Fatal("an answer outside the match set flagged the account")
			}
			for _, list := range []string{"authbl", "authbl-rcpt"} {
				w := r.logs.FilterLevelExact(zapcore.WarnLevel).FilterField(zap.String("list", list))
				if w.Len() != 1 || w.All()[0].ContextMap()["codes"] != c.code {
					t.Errorf("list %s: warnings %v, want one naming code %s", list, w.All(), c.code)
				}
			}
		})
	}
}

// TestFaultOneOfSeveralServersDown: with a server that is down first or
// second in turn, every transaction is still judged on the answers of the
// one that works: listings found, clean mail not tempfailed.
func TestFaultOneOfSeveralServersDown(t *testing.T) {
	dead := zoneserver.New()
	if err := dead.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr()
	dead.Close() // nothing answers there now

	r := newRig(t, rigOptions{tempfail: true, timeout: 2 * time.Second,
		dnsTimeout: 300 * time.Millisecond, dnsServers: []string{deadAddr}})
	for i := range 3 { // the rotation starts at each server in turn
		wantReject(t, r.send(authTx(fmt.Sprintf("ip%d@example.com", i), listedIP, "x@example.org")))
		wantReject(t, r.send(authTx(fmt.Sprintf("rcpt%d@example.com", i), "198.51.100.1", dropbox)))
		wantAccept(t, r.send(authTx(fmt.Sprintf("clean%d@example.com", i), "198.51.100.1",
			"x@example.org")))
	}
	if n := r.logs.FilterMessage("lookups failed").Len(); n != 0 {
		t.Fatalf("%d transactions saw failed lookups", n)
	}
}

// TestListThatListsEverythingBlocksNothing: once the health check finds a
// list answering for 127.0.0.1, its listings stop blocking mail: they are
// failures, under on_error, until it recovers.
func TestListThatListsEverythingBlocksNothing(t *testing.T) {
	for _, tempfail := range []bool{false, true} {
		t.Run(onErrorName(tempfail), func(t *testing.T) {
			r := newRig(t, rigOptions{tempfail: tempfail})
			if err := r.zones.AddIP(ipZone, "127.0.0.1", "127.0.0.4"); err != nil {
				t.Fatal(err)
			}
			r.srv.Options().Checker.CheckHealth(context.Background())

			wantOnError(t, r.send(authTx("a@example.com", listedIP, "x@example.org")), tempfail)
			if _, ok := r.flagged("a@example.com"); ok {
				t.Fatal("a list that lists everything flagged the account")
			}
			// The recipient list is healthy: its listing still counts.
			wantReject(t, r.send(authTx("b@example.com", "198.51.100.1", dropbox)))

			if err := r.zones.AddIP(ipZone, "127.0.0.1"); err != nil {
				t.Fatal(err)
			}
			r.srv.Options().Checker.CheckHealth(context.Background())
			wantReject(t, r.send(authTx("c@example.com", listedIP, "x@example.org")))
		})
	}
}

// TestCachedAnswersServeRepeatTransactions: with the cache, a second
// transaction from the same client to the same recipient asks nothing.
func TestCachedAnswersServeRepeatTransactions(t *testing.T) {
	r := newRig(t, rigOptions{cache: true})
	for range 3 {
		wantAccept(t, r.send(authTx("a@example.com", "198.51.100.1", "x@example.org")))
	}
	if n := len(r.zones.Queries()); n != 2 {
		t.Fatalf("%d DNS queries for 3 identical transactions, want 2", n)
	}
	st, ok := r.srv.Options().Checker.CacheStats()
	if !ok || st.Hits != 4 || st.Misses != 2 {
		t.Fatalf("cache stats %+v, %v; want 4 hits and 2 misses", st, ok)
	}
}

// TestCachedListingsStillReject: answers taken from the cache, without a
// lookup goroutine, decide as answers from the DNS do: a listed client
// and a dropbox reject new accounts without asking again.
func TestCachedListingsStillReject(t *testing.T) {
	r := newRig(t, rigOptions{cache: true})
	wantReject(t, r.send(authTx("first@example.com", listedIP, "x@example.org")))
	wantReject(t, r.send(authTx("second@example.com", "198.51.100.2", dropbox)))
	asked := len(r.zones.Queries())

	wantReject(t, r.send(authTx("third@example.com", listedIP, "x@example.org")))
	res := r.send(authTx("fourth@example.com", "198.51.100.2", "x@example.org", dropbox))
	wantReject(t, res)
	if n := len(r.zones.Queries()); n != asked {
		t.Fatalf("%d DNS queries for answers the cache holds, want none", n-asked)
	}
	f, ok := r.flagged("fourth@example.com")
	if !ok || f.Reason != action.ReasonRecipient || f.Recipient != dropbox {
		t.Fatalf("flag %+v, %v; want a dropbox detection", f, ok)
	}
}

// TestStoreOutageEndsAtTheNextReadWithMemory: Accounts ends an outage of
// the store at the first call that succeeds, "a read by the next
// transaction", and until then sends detections straight to memory
// without trying the store. With the store's reads answered from memory,
// as serve answers them, that read must still end the outage: here a
// detection written while another process held the store's lock fails
// (451 under on_error = tempfail); once the lock is gone, the store
// works, and a detection in a later transaction must be written and
// rejected, not refused a write and answered 451 as if the store were
// still down.
func TestStoreOutageEndsAtTheNextReadWithMemory(t *testing.T) {
	r := newRig(t, rigOptions{tempfail: true, timeout: 500 * time.Millisecond,
		changeCheck: time.Hour})
	wantAccept(t, r.send(authTx("bob@example.com", "198.51.100.30", "x@example.org")))

	unlock := r.lockStore()
	wantOnError(t, r.send(authTx("carol@example.com", listedIP, "x@example.org")), true)
	unlock()

	wantAccept(t, r.send(authTx("bob@example.com", "198.51.100.30", "x@example.org")))
	wantReject(t, r.send(authTx("bob@example.com", listedIP, "x@example.org")))
	if _, ok := r.flagged("bob@example.com"); !ok {
		t.Fatal("bob's detection is not in the store, which works again")
	}
}
