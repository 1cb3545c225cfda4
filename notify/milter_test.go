package notify_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/config"
	"github.com/authbl-milter/authbl-milter/lookup"
	"github.com/authbl-milter/authbl-milter/lookup/zoneserver"
	"github.com/authbl-milter/authbl-milter/milter"
	"github.com/authbl-milter/authbl-milter/milter/mtasim"
	"github.com/authbl-milter/authbl-milter/notify"
)

const (
	ipZone   = "authbl.example.test"
	listedIP = "192.0.2.66"
	cleanIP  = "198.51.100.10"
)

// node is a milter on loopback, with a zone server and a SQLite store,
// whose detections go to a notifier.
type node struct {
	t          *testing.T
	addr       string
	store      *action.SQLiteStore
	n          *notify.Notifier
	detections chan milter.Detection // every OnDetection call, once done
}

func newNode(t *testing.T, o notify.Options) *node {
	t.Helper()
	z := zoneserver.New()
	if err := z.AddIP(ipZone, listedIP, "127.0.0.4"); err != nil {
		t.Fatal(err)
	}
	if err := z.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { z.Close() })
	lists, err := lookup.NewLists([]config.List{{Name: "authbl", Kind: "ip", Zone: ipZone}})
	if err != nil {
		t.Fatal(err)
	}
	dns, err := lookup.NewDNSClient([]string{z.Addr()}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	store, err := action.OpenSQLite(filepath.Join(t.TempDir(), "accounts.db"), action.SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })

	o.Outbox = store.Outbox()
	nd := &node{t: t, store: store, n: notify.New(o),
		detections: make(chan milter.Detection, 100)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		nd.n.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	srv := milter.NewServer(milter.Options{
		Checker:    lookup.NewChecker(lists, dns, nil),
		Accounts:   action.NewAccounts(store, action.AccountsOptions{}),
		Policy:     action.Policy{Mode: action.ModeReject},
		RejectText: "5.7.1 compromised",
		Timeout:    2 * time.Second,
		OnDetection: func(d milter.Detection) {
			nd.n.OnDetection(d)
			nd.detections <- d
		},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nd.addr = ln.Addr().String()
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return nd
}

// send runs one authenticated transaction and returns the answer and how
// long it took.
func (nd *node) send(login, client string) (mtasim.Result, time.Duration) {
	nd.t.Helper()
	start := time.Now()
	c, err := mtasim.Dial("tcp", nd.addr, mtasim.Options{ClientAddr: client,
		ClientName: "client.example", Helo: "client.example"})
	if err != nil {
		nd.t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Send(mtasim.Transaction{Login: login, AuthType: "PLAIN",
		ClientAddr: client, From: "<" + login + ">", Rcpts: []string{"friend@example.org"},
		QueueID: "4ABC123"})
	if err != nil {
		nd.t.Fatal(err)
	}
	return res, time.Since(start)
}

// detection waits for the next OnDetection call to be over.
func (nd *node) detection() milter.Detection {
	nd.t.Helper()
	select {
	case d := <-nd.detections:
		return d
	case <-time.After(10 * time.Second):
		nd.t.Fatal("no detection reported")
		return milter.Detection{}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestNotificationsDoNotDelayTheAnswer: with a webhook that never
// answers and a report command that sleeps, the milter still answers at
// once, for the detection and for the mail after it.
func TestNotificationsDoNotDelayTheAnswer(t *testing.T) {
	hang := make(chan struct{})
	var hits atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(hook.Close)
	t.Cleanup(func() { close(hang) }) // runs first: lets the handler go

	nd := newNode(t, notify.Options{
		Command:  []string{"/bin/sleep", "30"},
		Webhooks: []string{hook.URL},
		Timeout:  3 * time.Second, // each notification hangs this long
	})
	// A generous bound: the notifications would take 3 s.
	const bound = 1500 * time.Millisecond

	res, took := nd.send("mallory@example.com", listedIP)
	if !res.Rejected() {
		t.Fatalf("got %q, want a rejection", res)
	}
	if took > bound {
		t.Errorf("the rejection took %v: the notifications delayed it", took)
	}
	if d := nd.detection(); !d.New {
		t.Fatalf("detection %+v, want a new one", d)
	}
	// Both notifications are under way and hanging now.
	waitFor(t, "the webhook request", func() bool { return hits.Load() == 1 })

	res, took = nd.send("bob@example.com", cleanIP)
	if !res.Accepted() || took > bound {
		t.Errorf("the next mail got %q after %v", res, took)
	}
	if s := nd.n.Stats(); s.CommandsRun != 0 || s.WebhooksDelivered != 0 {
		t.Errorf("stats %+v: a notification finished before its hang", s)
	}
}

// TestOnlyNewDetectionsNotify: the first detection of an account runs
// the command and posts the webhook once; its later mail, detected again
// or rejected as flagged, notifies nothing.
func TestOnlyNewDetectionsNotify(t *testing.T) {
	var posts atomic.Int32
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		posts.Add(1)
	}))
	t.Cleanup(hook.Close)
	reports := filepath.Join(t.TempDir(), "reports")
	nd := newNode(t, notify.Options{
		Command: []string{"/bin/sh", "-c", `printf '%s %s\n' "$AUTHBL_ACCOUNT" "$sasl_username" >>"$0"`,
			reports},
		Webhooks: []string{hook.URL},
	})

	res, _ := nd.send("Mallory@Example.com", listedIP) // new: notified
	if !res.Rejected() {
		t.Fatalf("first mail: %q", res)
	}
	if d := nd.detection(); !d.New || d.Verdict.Reason != action.ReasonIP {
		t.Fatalf("first detection %+v", d)
	}
	nd.send("mallory@example.com", listedIP) // listed again, not new
	if d := nd.detection(); d.New || d.Verdict.Reason != action.ReasonIP {
		t.Fatalf("second detection %+v", d)
	}
	nd.send("mallory@example.com", cleanIP) // flagged
	if d := nd.detection(); d.New || d.Verdict.Reason != action.ReasonFlagged {
		t.Fatalf("third detection %+v", d)
	}

	// Every OnDetection call is over: whatever they queued is counted.
	if s := nd.n.Stats(); s.Events != 1 {
		t.Fatalf("%d events notified, want 1 (stats %+v)", s.Events, s)
	}
	waitFor(t, "the notifications", func() bool {
		s := nd.n.Stats()
		return s.CommandsRun == 1 && s.WebhooksDelivered == 1
	})
	data, err := os.ReadFile(reports)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(data)); got != "mallory@example.com mallory@example.com" {
		t.Errorf("reports %q, want one line for the account", got)
	}
	if k := posts.Load(); k != 1 {
		t.Errorf("%d webhook posts, want 1", k)
	}
}
