package notify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/action/redistest"
)

// receiver is a webhook endpoint on loopback that answers with the codes
// it is given, in turn, then with its default.
type receiver struct {
	srv *httptest.Server

	mu       sync.Mutex
	codes    []int
	dflt     int
	requests []received
	hang     chan struct{} // when set, requests wait for it or their end
}

type received struct {
	Method, Signature, Delivery, ContentType string
	Body                                     []byte
}

func newReceiver(t *testing.T, dflt int, codes ...int) *receiver {
	r := &receiver{codes: codes, dflt: dflt}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.requests = append(r.requests, received{req.Method, req.Header.Get(SignatureHeader),
		req.Header.Get(DeliveryHeader), req.Header.Get("Content-Type"), body})
	code := r.dflt
	if len(r.codes) > 0 {
		code, r.codes = r.codes[0], r.codes[1:]
	}
	hang := r.hang
	r.mu.Unlock()
	if hang != nil {
		select {
		case <-hang:
		case <-req.Context().Done():
		}
		return
	}
	w.WriteHeader(code)
}

func (r *receiver) setDefault(code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dflt = code
}

func (r *receiver) got() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.requests...)
}

func fastOptions(urls ...string) Options {
	return Options{
		Webhooks:     urls,
		Timeout:      2 * time.Second,
		PollInterval: 50 * time.Millisecond,
		Backoff:      func(int) time.Duration { return 10 * time.Millisecond },
		Host:         "mx1.example.test",
	}
}

func testEvent(account string) Event {
	return Event{
		Account:    account,
		ClientIP:   "192.0.2.66",
		Reason:     "recipient",
		List:       "authbl-rcpt",
		Recipient:  "dropbox@example.net",
		Recipients: []string{"friend@example.org", "dropbox@example.net"},
		QueueID:    "4ABC123",
		Action:     "reject",
		Host:       "mx1.example.test",
		Time:       time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
	}
}

// TestWebhookRetriedUntilDelivered fails twice, then accepts; checks the
// body, the signature and the delivery id on every attempt.
func TestWebhookRetriedUntilDelivered(t *testing.T) {
	rcv := newReceiver(t, http.StatusOK, http.StatusServiceUnavailable, http.StatusInternalServerError)
	store := openSQLite(t, filepath.Join(t.TempDir(), "accounts.db"))
	o := fastOptions(rcv.srv.URL + "/hook")
	o.WebhookSecret = "s3cret"
	o.Outbox = store.Outbox()
	core, logs := observer.New(zapcore.DebugLevel)
	o.Log = zap.New(core)
	n := New(o)
	runNotifier(t, n)

	n.Notify(testEvent("alice@example.com"))
	waitFor(t, "delivery", func() bool { return n.Stats().WebhooksDelivered == 1 })

	reqs := rcv.got()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3 (two failures, one success)", len(reqs))
	}
	for i, r := range reqs {
		if r.Method != http.MethodPost || r.ContentType != "application/json" {
			t.Errorf("request %d: %s %s", i, r.Method, r.ContentType)
		}
		if want := Sign([]byte("s3cret"), r.Body); r.Signature != want {
			t.Errorf("request %d: signature %q, want %q", i, r.Signature, want)
		}
		if r.Delivery == "" || r.Delivery != reqs[0].Delivery {
			t.Errorf("request %d: delivery id %q, want the same on every attempt", i, r.Delivery)
		}
	}
	var doc map[string]any
	if err := json.Unmarshal(reqs[2].Body, &doc); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"account": "alice@example.com", "client_ip": "192.0.2.66",
		"reason": "recipient", "list": "authbl-rcpt", "queue_id": "4ABC123",
		"action": "reject", "time": "2026-03-01T12:00:00Z", "host": "mx1.example.test",
		"event": "account_compromised", "recipient": "dropbox@example.net"}
	for k, v := range want {
		if doc[k] != v {
			t.Errorf("%s = %v, want %v", k, doc[k], v)
		}
	}
	if rc, _ := doc["recipients"].([]any); len(rc) != 2 || rc[1] != "dropbox@example.net" {
		t.Errorf("recipients = %v", doc["recipients"])
	}
	if s := n.Stats(); s.WebhooksFailed != 2 || s.WebhooksAbandoned != 0 {
		t.Errorf("stats %+v", s)
	}
	if k := outboxLen(t, store.Outbox()); k != 0 {
		t.Errorf("%d entries left in the outbox after delivery", k)
	}
	if logs.FilterMessage("webhook delivery failed; will retry").Len() != 2 {
		t.Error("the failed attempts were not logged")
	}
}

// TestWebhookKnownSignature pins the signature format against a value
// computed independently (openssl dgst -sha256 -hmac key).
func TestWebhookKnownSignature(t *testing.T) {
	got := Sign([]byte("key"), []byte("The quick brown fox jumps over the lazy dog"))
	want := "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
	if got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
}

func TestWebhookUnsignedWithoutSecret(t *testing.T) {
	rcv := newReceiver(t, http.StatusNoContent)
	n := New(fastOptions(rcv.srv.URL))
	runNotifier(t, n)
	n.Notify(testEvent("a@example.com"))
	waitFor(t, "delivery", func() bool { return n.Stats().WebhooksDelivered == 1 })
	if r := rcv.got(); r[0].Signature != "" {
		t.Errorf("signature %q without a secret", r[0].Signature)
	}
}

func TestWebhookPermanentFailureGivenUp(t *testing.T) {
	rcv := newReceiver(t, http.StatusBadRequest)
	n := New(fastOptions(rcv.srv.URL))
	runNotifier(t, n)
	n.Notify(testEvent("a@example.com"))
	waitFor(t, "abandonment", func() bool { return n.Stats().WebhooksAbandoned == 1 })
	if k := len(rcv.got()); k != 1 {
		t.Errorf("%d requests for a 400, want 1: not retried", k)
	}
	if k, _ := n.mem.Len(context.Background()); k != 0 {
		t.Errorf("%d entries left", k)
	}
}

func TestWebhookMaxAttempts(t *testing.T) {
	rcv := newReceiver(t, http.StatusServiceUnavailable)
	o := fastOptions(rcv.srv.URL)
	o.MaxAttempts = 3
	n := New(o)
	runNotifier(t, n)
	n.Notify(testEvent("a@example.com"))
	waitFor(t, "abandonment", func() bool { return n.Stats().WebhooksAbandoned == 1 })
	if k := len(rcv.got()); k != 3 {
		t.Errorf("%d requests, want 3", k)
	}
}

// TestWebhookHangingTimesOut: a receiver that never answers costs one
// timeout per attempt, in the background; Notify returns at once.
func TestWebhookHangingTimesOut(t *testing.T) {
	rcv := newReceiver(t, http.StatusOK)
	rcv.hang = make(chan struct{})
	t.Cleanup(func() { close(rcv.hang) })
	o := fastOptions(rcv.srv.URL)
	o.Timeout = 200 * time.Millisecond
	n := New(o)
	runNotifier(t, n)

	start := time.Now()
	n.Notify(testEvent("a@example.com"))
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("Notify took %v: it waited for the receiver", d)
	}
	waitFor(t, "two timed-out attempts", func() bool { return n.Stats().WebhooksFailed >= 2 })
	if s := n.Stats(); s.WebhooksDelivered != 0 {
		t.Errorf("stats %+v", s)
	}
}

// TestWebhookSurvivesRestart: a notification that could not be delivered
// stays in the SQLite outbox when its notifier stops, and a new notifier
// on the same file, as after a restart, delivers it.
func TestWebhookSurvivesRestart(t *testing.T) {
	rcv := newReceiver(t, http.StatusServiceUnavailable)
	path := filepath.Join(t.TempDir(), "accounts.db")

	store := openSQLite(t, path)
	o := fastOptions(rcv.srv.URL + "/hook")
	o.Backoff = func(int) time.Duration { return time.Hour } // no retry in this life
	o.Outbox = store.Outbox()
	first := New(o)
	stop := runNotifier(t, first)
	first.Notify(testEvent("alice@example.com"))
	waitFor(t, "a failed attempt", func() bool { return first.Stats().WebhooksFailed == 1 })
	stop()
	store.Close()

	rcv.setDefault(http.StatusOK)
	store = openSQLite(t, path)
	if k := outboxLen(t, store.Outbox()); k != 1 {
		t.Fatalf("%d entries in the outbox after the stop, want 1", k)
	}
	// Still an hour before its retry: make it due, as an hour passing would.
	o = fastOptions(rcv.srv.URL + "/hook")
	o.Outbox = store.Outbox()
	o.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	second := New(o)
	runNotifier(t, second)
	waitFor(t, "delivery after the restart", func() bool {
		return second.Stats().WebhooksDelivered == 1
	})
	reqs := rcv.got()
	if len(reqs) != 2 || reqs[0].Delivery != reqs[1].Delivery {
		t.Fatalf("%d requests, want the same notification twice", len(reqs))
	}
	var doc Document
	if err := json.Unmarshal(reqs[1].Body, &doc); err != nil || doc.Account != "alice@example.com" {
		t.Errorf("delivered %s (%v)", reqs[1].Body, err)
	}
	if k := outboxLen(t, store.Outbox()); k != 0 {
		t.Errorf("%d entries left", k)
	}
}

// TestWebhookDroppedWhenURLRemoved: a notification left for a URL that
// the next process no longer has is dropped, not sent.
func TestWebhookDroppedWhenURLRemoved(t *testing.T) {
	old := newReceiver(t, http.StatusOK)
	now := newReceiver(t, http.StatusOK)
	store := openSQLite(t, filepath.Join(t.TempDir(), "accounts.db"))
	err := store.Outbox().Add(context.Background(), action.OutboxEntry{ID: "left",
		Target: old.srv.URL, Body: []byte("{}"), Due: time.Now(), Created: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	o := fastOptions(now.srv.URL)
	o.Outbox = store.Outbox()
	n := New(o)
	runNotifier(t, n)
	waitFor(t, "the drop", func() bool { return n.Stats().WebhooksAbandoned == 1 })
	if k := len(old.got()) + len(now.got()); k != 0 {
		t.Errorf("%d requests, want none", k)
	}
	if k := outboxLen(t, store.Outbox()); k != 0 {
		t.Errorf("%d entries left", k)
	}
}

// TestWebhookStopReleasesInFlight: a delivery cut short by the stop is
// no failed attempt, and the entry is due at once for the next process.
func TestWebhookStopReleasesInFlight(t *testing.T) {
	rcv := newReceiver(t, http.StatusOK)
	rcv.hang = make(chan struct{})
	t.Cleanup(func() { close(rcv.hang) })
	store := openSQLite(t, filepath.Join(t.TempDir(), "accounts.db"))
	o := fastOptions(rcv.srv.URL)
	o.Timeout = time.Minute
	o.Outbox = store.Outbox()
	n := New(o)
	stop := runNotifier(t, n)
	n.Notify(testEvent("a@example.com"))
	waitFor(t, "the request", func() bool { return len(rcv.got()) == 1 })
	stop()

	if s := n.Stats(); s.WebhooksFailed != 0 {
		t.Errorf("stats %+v: the stop counted as a failure", s)
	}
	got, err := store.Outbox().Claim(context.Background(), time.Now(), time.Minute, 10)
	if err != nil || len(got) != 1 || got[0].Attempts != 0 {
		t.Fatalf("after the stop: %+v, %v; want the entry due, no attempt counted", got, err)
	}
}

// TestWebhookStoreDownKeptInMemory: with its Redis down, the notifier
// keeps the notification in memory and still delivers it.
func TestWebhookStoreDownKeptInMemory(t *testing.T) {
	srv := redistest.Start(t)
	store, err := action.OpenRedis(srv.URL(), action.RedisOptions{Prefix: "n:"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	rcv := newReceiver(t, http.StatusOK)
	o := fastOptions(rcv.srv.URL)
	o.Outbox = store.Outbox()
	core, logs := observer.New(zapcore.DebugLevel)
	o.Log = zap.New(core)
	n := New(o)
	runNotifier(t, n)

	n.Notify(testEvent("before@example.com"))
	waitFor(t, "delivery through Redis", func() bool { return n.Stats().WebhooksDelivered == 1 })
	srv.Stop()
	n.Notify(testEvent("during@example.com"))
	waitFor(t, "delivery from memory", func() bool { return n.Stats().WebhooksDelivered == 2 })
	if logs.FilterMessage("webhook notification not written to the account store;"+
		" kept in memory only").Len() != 1 {
		t.Error("the fallback was not logged")
	}
	var doc Document
	if reqs := rcv.got(); len(reqs) != 2 ||
		json.Unmarshal(reqs[1].Body, &doc) != nil || doc.Account != "during@example.com" {
		t.Errorf("requests %d, last %+v", len(reqs), doc)
	}
}

// TestWebhookRedisOutboxSharedByTwo: two notifiers on one Redis, as two
// milters of a cluster: each notification is delivered once.
func TestWebhookRedisOutboxSharedByTwo(t *testing.T) {
	srv := redistest.Start(t)
	rcv := newReceiver(t, http.StatusOK)
	var ns []*Notifier
	for range 2 {
		store, err := action.OpenRedis(srv.URL(), action.RedisOptions{Prefix: "two:"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		o := fastOptions(rcv.srv.URL)
		o.Outbox = store.Outbox()
		n := New(o)
		runNotifier(t, n)
		ns = append(ns, n)
	}
	for i := range 10 {
		ns[i%2].Notify(testEvent("user" + string(rune('a'+i)) + "@example.com"))
	}
	waitFor(t, "10 deliveries", func() bool {
		return ns[0].Stats().WebhooksDelivered+ns[1].Stats().WebhooksDelivered == 10
	})
	seen := map[string]bool{}
	for _, r := range rcv.got() {
		if seen[r.Delivery] {
			t.Errorf("notification %s delivered twice", r.Delivery)
		}
		seen[r.Delivery] = true
	}
	if len(seen) != 10 {
		t.Errorf("%d notifications delivered, want 10", len(seen))
	}
}

func openSQLite(t *testing.T, path string) *action.SQLiteStore {
	t.Helper()
	s, err := action.OpenSQLite(path, action.SQLiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func outboxLen(t *testing.T, o action.Outbox) int {
	t.Helper()
	k, err := o.Len(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return k
}
