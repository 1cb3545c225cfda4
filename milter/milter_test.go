package milter_test

import (
	"context"
	"database/sql"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/config"
	"github.com/authbl-milter/authbl-milter/lookup"
	"github.com/authbl-milter/authbl-milter/lookup/zoneserver"
	"github.com/authbl-milter/authbl-milter/milter"
	"github.com/authbl-milter/authbl-milter/milter/mtasim"
)

const (
	ipZone     = "authbl.example.test"
	rcptZone   = "authbl-rcpt.example.test"
	listedIP   = "192.0.2.66"
	listedIPv6 = "2001:db8::66"
	errorIP    = "192.0.2.254"
	dropbox    = "dropbox@example.net"
	rejectText = "5.7.1 account compromised, contact postmaster"
)

// rig is a milter server on loopback with a zone server and a SQLite
// store behind it, all real.
type rig struct {
	t      *testing.T
	zones  *zoneserver.Server
	store  *action.SQLiteStore
	dbPath string
	srv    *milter.Server
	addr   string
	logs   *observer.ObservedLogs
	mu     sync.Mutex
	events []milter.Detection
}

type rigOptions struct {
	mode     action.Mode
	tempfail bool
	timeout  time.Duration
	allow    []string
	exempt   config.Exempt

	dnsTimeout time.Duration // per DNS exchange; 0: timeout
	dnsServers []string      // asked besides the zone server
	cache      bool          // a lookup.Cache in front of the DNS client
	// changeCheck, when set, keeps the store's reads in memory, as serve
	// does (action.SQLiteOptions.ChangeCheck).
	changeCheck time.Duration
}

// newZones starts a zone server that lists listedIP and listedIPv6 on
// the IP list, answers an error code for errorIP, and lists dropbox on the
// recipient list; it returns the lists to query it.
func newZones(t *testing.T) (*zoneserver.Server, []*lookup.List) {
	t.Helper()
	z := zoneserver.New()
	for _, err := range []error{
		z.AddIP(ipZone, listedIP, "127.0.0.4"),
		z.AddIP(ipZone, listedIPv6, "127.0.0.4"),
		z.AddIP(ipZone, errorIP, "127.255.255.254"),
		z.AddRecipient(rcptZone, dropbox, "127.0.0.2"),
		z.Start("127.0.0.1:0"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { z.Close() })
	lists, err := lookup.NewLists([]config.List{
		{Name: "authbl", Kind: "ip", Zone: ipZone},
		{Name: "authbl-rcpt", Kind: "recipient", Zone: rcptZone},
	})
	if err != nil {
		t.Fatal(err)
	}
	return z, lists
}

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	if o.mode == "" {
		o.mode = action.ModeReject
	}
	if o.timeout == 0 {
		o.timeout = 2 * time.Second
	}
	z, lists := newZones(t)
	if o.dnsTimeout == 0 {
		o.dnsTimeout = o.timeout
	}
	dns, err := lookup.NewDNSClient(append(o.dnsServers, z.Addr()), o.dnsTimeout)
	if err != nil {
		t.Fatal(err)
	}
	var resolver lookup.Resolver = dns
	if o.cache {
		resolver = lookup.NewCache(dns, lookup.CacheOptions{Size: 1000, MaxTTL: time.Hour})
	}
	dbPath := filepath.Join(t.TempDir(), "accounts.db")
	store, err := action.OpenSQLite(dbPath, action.SQLiteOptions{ChangeCheck: o.changeCheck})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })

	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	r := &rig{t: t, zones: z, store: store, dbPath: dbPath, logs: logs}
	allow := map[string]bool{}
	for _, a := range o.allow {
		allow[a] = true
	}
	r.srv = milter.NewServer(milter.Options{
		Checker:     lookup.NewChecker(lists, resolver, log),
		Accounts:    action.NewAccounts(store, action.AccountsOptions{Log: log}),
		Policy:      action.Policy{Mode: o.mode, TempfailOnError: o.tempfail},
		RejectText:  rejectText,
		Timeout:     o.timeout,
		Allow:       allow,
		Exempt:      o.exempt,
		Log:         log,
		OnDetection: r.onDetection,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	go r.srv.Serve(ln)
	t.Cleanup(func() { r.srv.Close() })
	return r
}

// lockStore takes the account store's write lock from a connection of
// its own, as another process in the middle of a long write holds it;
// unlock lets it go.
func (r *rig) lockStore() (unlock func()) {
	r.t.Helper()
	db, err := sql.Open("sqlite", r.store.Path())
	if err != nil {
		r.t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		r.t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		conn.Close()
		db.Close()
		r.t.Fatal(err)
	}
	var once sync.Once
	unlock = func() {
		once.Do(func() {
			if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
				r.t.Error(err)
			}
			conn.Close()
			db.Close()
		})
	}
	r.t.Cleanup(unlock)
	return unlock
}

func (r *rig) onDetection(d milter.Detection) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, d)
}

func (r *rig) dial(clientAddr string) *mtasim.Conn {
	r.t.Helper()
	c, err := mtasim.Dial("tcp", r.addr, mtasim.Options{ClientAddr: clientAddr,
		ClientName: "client.example", Helo: "client.example", Timeout: 10 * time.Second})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	return c
}

// send runs tx on a connection of its own.
func (r *rig) send(tx mtasim.Transaction) mtasim.Result {
	r.t.Helper()
	return r.sendOn(r.dial(tx.ClientAddr), tx)
}

func (r *rig) sendOn(c *mtasim.Conn, tx mtasim.Transaction) mtasim.Result {
	r.t.Helper()
	if tx.Login != "" && tx.AuthType == "" {
		tx.AuthType = "PLAIN"
	}
	if tx.From == "" {
		tx.From = "sender@example.com"
	}
	res, err := c.Send(tx)
	if err != nil {
		r.t.Fatal(err)
	}
	return res
}

// detections returns the account_compromised log events.
func (r *rig) detections() []map[string]any {
	var out []map[string]any
	for _, e := range r.logs.FilterField(zap.String("event", "account_compromised")).All() {
		out = append(out, e.ContextMap())
	}
	return out
}

func (r *rig) flagged(account string) (action.Flag, bool) {
	f, err := r.store.Get(context.Background(), account)
	return f, err == nil
}

func authTx(login, client string, rcpts ...string) mtasim.Transaction {
	return mtasim.Transaction{Login: login, ClientAddr: client, Rcpts: rcpts, QueueID: "4ABC123"}
}

func wantReject(t *testing.T, res mtasim.Result) {
	t.Helper()
	if !res.Rejected() || res.SMTPCode != 550 || res.SMTPText != rejectText {
		t.Fatalf("got %q at %s, want 550 %s", res, res.Stage, rejectText)
	}
}

func wantAccept(t *testing.T, res mtasim.Result) {
	t.Helper()
	if !res.Accepted() || res.Quarantine != "" {
		t.Fatalf("got %q at %s, want accept", res, res.Stage)
	}
}

func TestCleanTransactionAccepted(t *testing.T) {
	r := newRig(t, rigOptions{})
	res := r.send(authTx("alice@example.com", "198.51.100.10", "bob@example.org", "carol@example.org"))
	wantAccept(t, res)
	if res.Stage != "eoh" {
		t.Fatalf("decided at %s, want end of headers", res.Stage)
	}
	if _, ok := r.flagged("alice@example.com"); ok {
		t.Fatal("clean account flagged")
	}
	if n := len(r.zones.Queries()); n != 3 {
		t.Fatalf("%d DNS queries, want 3 (one IP, two recipients)", n)
	}
}

func TestListedIPRejectedAndFlaggedBeforeAnswer(t *testing.T) {
	r := newRig(t, rigOptions{})
	res := r.send(authTx("Mallory@Example.com", listedIP, "friend@example.org"))
	wantReject(t, res)

	// The flag is in the store as soon as the answer is back.
	f, ok := r.flagged("mallory@example.com")
	if !ok {
		t.Fatal("account not flagged when the reject arrived")
	}
	if f.Reason != action.ReasonIP || f.List != "authbl" || f.ClientIP != listedIP {
		t.Fatalf("flag %+v", f)
	}
	ev := r.detections()
	if len(ev) != 1 {
		t.Fatalf("%d detection events, want 1", len(ev))
	}
	want := map[string]any{"account": "mallory@example.com", "client_ip": listedIP,
		"reason": "ip", "list": "authbl", "recipient": "", "action": "reject",
		"queue_id": "4ABC123", "new": true}
	for k, v := range want {
		if ev[0][k] != v {
			t.Errorf("event field %s = %v, want %v", k, ev[0][k], v)
		}
	}
}

func TestListedIPv6Rejected(t *testing.T) {
	r := newRig(t, rigOptions{})
	wantReject(t, r.send(authTx("v6@example.com", listedIPv6, "friend@example.org")))
}

func TestDropboxAmongRecipientsRejected(t *testing.T) {
	r := newRig(t, rigOptions{})
	res := r.send(authTx("dave@example.com", "198.51.100.11",
		"one@example.org", "<DropBox@Example.NET>", "two@example.org"))
	wantReject(t, res)
	f, ok := r.flagged("dave@example.com")
	if !ok || f.Reason != action.ReasonRecipient || f.Recipient != dropbox {
		t.Fatalf("flag %+v, %v", f, ok)
	}
}

func TestFlaggedAccountRejectedFromAnyIPToAnyRecipient(t *testing.T) {
	r := newRig(t, rigOptions{})
	wantReject(t, r.send(authTx("dave@example.com", "198.51.100.11", dropbox)))
	res := r.send(authTx("DAVE@example.com", "198.51.100.12", "mum@example.org"))
	wantReject(t, res)
	ev := r.detections()
	if len(ev) != 2 || ev[1]["reason"] != "flagged" || ev[1]["new"] != false {
		t.Fatalf("events %v", ev)
	}

	// Released by an operator: accepted again.
	if err := r.store.Release(context.Background(), "dave@example.com"); err != nil {
		t.Fatal(err)
	}
	wantAccept(t, r.send(authTx("dave@example.com", "198.51.100.12", "mum@example.org")))
}

// TestFlaggedAccountAnsweredFromMemory: with the store's reads kept in
// memory, as serve keeps them, a flagged account is still rejected
// everywhere, and a release made by another connection to the file (the
// accounts command) reaches the milter once the change check sees it.
func TestFlaggedAccountAnsweredFromMemory(t *testing.T) {
	r := newRig(t, rigOptions{changeCheck: 20 * time.Millisecond})
	wantReject(t, r.send(authTx("dave@example.com", "198.51.100.11", dropbox)))
	for range 3 { // read from the file once, then from memory
		wantReject(t, r.send(authTx("dave@example.com", "198.51.100.12", "mum@example.org")))
	}
	if _, found, ok := r.store.Peek("dave@example.com"); !ok || !found {
		t.Fatalf("flag in memory: found %v, ok %v; want it there", found, ok)
	}

	cli, err := action.OpenSQLite(r.dbPath, action.SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if err := cli.Release(context.Background(), "dave@example.com"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		res := r.send(authTx("dave@example.com", "198.51.100.12", "mum@example.org"))
		if res.Accepted() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %+v 10 s after the release", res)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRepeatDetectionIsNotNew(t *testing.T) {
	r := newRig(t, rigOptions{})
	wantReject(t, r.send(authTx("erin@example.com", listedIP, "a@example.org")))
	wantReject(t, r.send(authTx("erin@example.com", listedIP, "a@example.org")))
	ev := r.detections()
	if len(ev) != 2 || ev[0]["new"] != true || ev[1]["new"] != false || ev[1]["reason"] != "ip" {
		t.Fatalf("events %v", ev)
	}
	f, _ := r.flagged("erin@example.com")
	if f.Hits != 2 {
		t.Fatalf("hits %d, want 2", f.Hits)
	}
}

func TestQuarantineAtEndOfMessage(t *testing.T) {
	r := newRig(t, rigOptions{mode: action.ModeQuarantine})
	res := r.send(authTx("q@example.com", listedIP, "a@example.org"))
	if res.Stage != "eom" || !res.Accepted() || res.Quarantine == "" {
		t.Fatalf("got %q at %s, want accept with quarantine at eom", res, res.Stage)
	}
	if !strings.Contains(res.Quarantine, "q@example.com") {
		t.Fatalf("quarantine reason %q does not name the account", res.Quarantine)
	}
	if _, ok := r.flagged("q@example.com"); !ok {
		t.Fatal("not flagged")
	}
}

func TestLogModeAcceptsAndLogs(t *testing.T) {
	r := newRig(t, rigOptions{mode: action.ModeLog})
	wantAccept(t, r.send(authTx("l@example.com", listedIP, "a@example.org")))
	ev := r.detections()
	if len(ev) != 1 || ev[0]["action"] != "log" {
		t.Fatalf("events %v", ev)
	}
	if _, ok := r.flagged("l@example.com"); !ok {
		t.Fatal("not flagged in log mode")
	}
}

func TestAllowedAccountNeverChecked(t *testing.T) {
	r := newRig(t, rigOptions{allow: []string{"webmail@example.com"}})
	res := r.send(authTx("WebMail@example.com", listedIP, dropbox))
	if !res.Accepted() || res.Stage != "mail" {
		t.Fatalf("got %q at %s, want accept at mail", res, res.Stage)
	}
	if n := len(r.zones.Queries()); n != 0 {
		t.Fatalf("%d DNS queries for an exempt account", n)
	}
}

func TestDuplicateRecipientLookedUpOnce(t *testing.T) {
	r := newRig(t, rigOptions{})
	wantAccept(t, r.send(authTx("a@example.com", "198.51.100.1",
		"x@example.org", "<X@Example.ORG>", "x@example.org")))
	if n := len(r.zones.Queries()); n != 2 {
		t.Fatalf("%d queries, want 2", n)
	}
}

func TestErrorCodeAnswerIsNotAListing(t *testing.T) {
	r := newRig(t, rigOptions{tempfail: true})
	wantAccept(t, r.send(authTx("a@example.com", errorIP, "x@example.org")))
}

func TestDNSFailureFollowsOnError(t *testing.T) {
	for _, tt := range []struct {
		name     string
		behavior zoneserver.Behavior
		tempfail bool
	}{
		{"servfail, accept", zoneserver.ServFail, false},
		{"servfail, tempfail", zoneserver.ServFail, true},
		{"refused, tempfail", zoneserver.Refused, true},
		{"malformed, accept", zoneserver.Malformed, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, rigOptions{tempfail: tt.tempfail, timeout: 500 * time.Millisecond})
			r.zones.SetBehavior(ipZone, tt.behavior)
			r.zones.SetBehavior(rcptZone, tt.behavior)
			res := r.send(authTx("a@example.com", listedIP, dropbox))
			if tt.tempfail {
				if !res.Tempfailed() || res.SMTPCode != 451 {
					t.Fatalf("got %q, want 451", res)
				}
			} else {
				wantAccept(t, res)
			}
			if _, ok := r.flagged("a@example.com"); ok {
				t.Fatal("a DNS failure flagged the account")
			}
			if r.logs.FilterMessage("lookups failed").Len() != 1 {
				t.Fatal("the failure was not logged")
			}
		})
	}
}

func TestOneListFailingOtherListingStillRejects(t *testing.T) {
	r := newRig(t, rigOptions{tempfail: true, timeout: 500 * time.Millisecond})
	r.zones.SetBehavior(ipZone, zoneserver.ServFail)
	wantReject(t, r.send(authTx("a@example.com", "198.51.100.1", dropbox)))
}

func TestMalformedInputNeverCrashes(t *testing.T) {
	r := newRig(t, rigOptions{tempfail: true})
	long := strings.Repeat("a", 70000) + "@example.com"
	for _, tx := range []mtasim.Transaction{
		{Login: "a@example.com", ClientAddr: "not-an-ip", Rcpts: []string{"x@example.org"}},
		{Login: "a@example.com", ClientAddr: "IPv6:", Rcpts: []string{"<", "<>", "\n", ""}},
		{Login: "a@example.com", ClientAddr: "198.51.100.1", Rcpts: []string{long}},
		{Login: "\x00\xff", ClientAddr: "198.51.100.1", Rcpts: []string{"a\rb@example.org"}},
		{Login: "a@example.com", ClientAddr: "[192.0.2.66", Rcpts: nil},
	} {
		res := r.send(tx)
		if res.Rejected() {
			t.Fatalf("%q: rejected on bad input", tx.ClientAddr)
		}
	}
	// The server still answers properly afterwards.
	wantReject(t, r.send(authTx("b@example.com", listedIP, "x@example.org")))
}

func TestManyRecipientsLookedUpInParallel(t *testing.T) {
	r := newRig(t, rigOptions{timeout: 3 * time.Second})
	r.zones.SetDelay(100 * time.Millisecond)
	var rcpts []string
	for i := range 20 {
		rcpts = append(rcpts, "r"+string(rune('a'+i))+"@example.org")
	}
	start := time.Now()
	wantAccept(t, r.send(authTx("a@example.com", "198.51.100.1", rcpts...)))
	// 21 lookups of 100 ms each: in series they would take over 2 s.
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Fatalf("took %v: lookups ran in series", d)
	}
}

func TestShutdownAnswersTransactionInFlight(t *testing.T) {
	r := newRig(t, rigOptions{timeout: 3 * time.Second})
	r.zones.SetDelay(300 * time.Millisecond)
	done := make(chan mtasim.Result, 1)
	c := r.dial(listedIP)
	go func() {
		res, err := c.Send(authTx("s@example.com", listedIP, "a@example.org"))
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	time.Sleep(100 * time.Millisecond) // the lookups are under way
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case res := <-done:
		wantReject(t, res)
	case <-time.After(5 * time.Second):
		t.Fatal("no answer")
	}
}

func TestOnDetectionCalled(t *testing.T) {
	r := newRig(t, rigOptions{})
	wantReject(t, r.send(authTx("n@example.com", listedIP, "a@example.org", dropbox)))
	deadline := time.Now().Add(2 * time.Second)
	for {
		r.mu.Lock()
		n := len(r.events)
		r.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d detections reported", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	d := r.events[0]
	if !d.New || d.Account != "n@example.com" || d.ClientIP != listedIP ||
		d.Helo != "client.example" || len(d.Recipients) != 2 || d.QueueID != "4ABC123" {
		t.Fatalf("detection %+v", d)
	}
}

func TestExemptClientNetworkSkipsOnlyTheIPCheck(t *testing.T) {
	ex := config.Exempt{ClientNetworks: []string{"192.0.2.0/25"}}
	if err := validExempt(&ex); err != nil {
		t.Fatal(err)
	}
	r := newRig(t, rigOptions{exempt: ex})
	wantAccept(t, r.send(authTx("web@example.com", listedIP, "x@example.org")))
	// Its recipients are still checked.
	wantReject(t, r.send(authTx("web2@example.com", listedIP, dropbox)))
	for _, q := range r.zones.Queries() {
		if strings.HasPrefix(q, "66.2.0.192.") {
			t.Fatalf("the exempt client was looked up: %s", q)
		}
	}
}

func TestExemptRecipientNeverLookedUp(t *testing.T) {
	ex := config.Exempt{Recipients: []string{"@Example.NET"}}
	if err := validExempt(&ex); err != nil {
		t.Fatal(err)
	}
	r := newRig(t, rigOptions{exempt: ex})
	wantAccept(t, r.send(authTx("a@example.com", "198.51.100.1", dropbox)))
	if n := len(r.zones.Queries()); n != 1 {
		t.Fatalf("%d queries, want only the client IP's", n)
	}
}

// validExempt validates e the way the config loader does.
func validExempt(e *config.Exempt) error {
	c := config.Default()
	c.Exempt = *e
	c.Lists = []config.List{{Name: "x", Kind: "ip", Zone: "x.test"}}
	if err := c.Validate(); err != nil {
		return err
	}
	*e = c.Exempt
	return nil
}

func TestUnreadableRecipientFollowsOnError(t *testing.T) {
	for _, tempfail := range []bool{false, true} {
		r := newRig(t, rigOptions{tempfail: tempfail})
		res := r.send(authTx("a@example.com", "198.51.100.1", "x@example.org", "<a\x01b@example.org>"))
		if tempfail && res.SMTPCode != 451 {
			t.Fatalf("tempfail: got %q, want 451", res)
		}
		if !tempfail {
			wantAccept(t, res)
		}
		if r.logs.FilterMessage("lookups failed").Len() != 1 {
			t.Fatal("the unread recipient was not logged as a failure")
		}
	}
}

// TestLogLinesCarryConnAndAccount: every line of a transaction names its
// connection and its account, whether the session's logger wrote it
// (built only when a line is written) or the decision was logged with
// the fields given.
func TestLogLinesCarryConnAndAccount(t *testing.T) {
	r := newRig(t, rigOptions{})
	wantAccept(t, r.send(authTx("Una@example.com", "198.51.100.1", "x@example.org", "<a\x01b@example.org>")))
	wantReject(t, r.send(authTx("vic@example.com", listedIP, "x@example.org")))
	for _, msg := range []string{"recipient not looked up", "lookups failed",
		"transaction checked", "account compromised"} {
		lines := r.logs.FilterMessage(msg).All()
		if len(lines) != 1 {
			t.Fatalf("%d lines %q, want 1", len(lines), msg)
		}
		m := lines[0].ContextMap()
		if conn, _ := m["conn"].(uint64); conn == 0 {
			t.Errorf("line %q: conn %v, want the connection's number", msg, m["conn"])
		}
		if m["account"] != "una@example.com" && m["account"] != "vic@example.com" {
			t.Errorf("line %q: account %v", msg, m["account"])
		}
		n := 0
		for _, f := range lines[0].Context {
			if f.Key == "conn" || f.Key == "account" {
				n++
			}
		}
		if n != 2 {
			t.Errorf("line %q has %d conn and account fields, want one each", msg, n)
		}
	}
}
