package milter_test

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/action/redistest"
	"github.com/authbl-milter/authbl-milter/lookup"
	"github.com/authbl-milter/authbl-milter/lookup/zoneserver"
	"github.com/authbl-milter/authbl-milter/milter"
	"github.com/authbl-milter/authbl-milter/milter/mtasim"
)

// redisNode is one milter of a cluster: its own server, Accounts and
// RedisStore, on a Redis shared with the other nodes.
type redisNode struct {
	t        *testing.T
	addr     string
	store    *action.RedisStore
	accounts *action.Accounts
	logs     *observer.ObservedLogs
}

type redisNodeOptions struct {
	tempfail    bool
	timeout     time.Duration
	logInterval time.Duration
}

func newRedisNode(t *testing.T, z *zoneserver.Server, lists []*lookup.List, redisURL string,
	o redisNodeOptions) *redisNode {
	t.Helper()
	if o.timeout == 0 {
		o.timeout = 2 * time.Second
	}
	dns, err := lookup.NewDNSClient([]string{z.Addr()}, o.timeout)
	if err != nil {
		t.Fatal(err)
	}
	store, err := action.OpenRedis(redisURL, action.RedisOptions{Prefix: "cluster:"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })

	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	n := &redisNode{t: t, store: store, logs: logs,
		accounts: action.NewAccounts(store, action.AccountsOptions{Log: log,
			LogInterval: o.logInterval})}
	srv := milter.NewServer(milter.Options{
		Checker:    lookup.NewChecker(lists, dns, log),
		Accounts:   n.accounts,
		Policy:     action.Policy{Mode: action.ModeReject, TempfailOnError: o.tempfail},
		RejectText: rejectText,
		Timeout:    o.timeout,
		Log:        log,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.addr = ln.Addr().String()
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return n
}

// send runs tx on a connection of its own and returns the answer with
// the time it took.
func (n *redisNode) send(tx mtasim.Transaction) (mtasim.Result, time.Duration) {
	n.t.Helper()
	start := time.Now()
	c, err := mtasim.Dial("tcp", n.addr, mtasim.Options{ClientAddr: tx.ClientAddr,
		ClientName: "client.example", Helo: "client.example", Timeout: 10 * time.Second})
	if err != nil {
		n.t.Fatal(err)
	}
	defer c.Close()
	tx.AuthType, tx.From = "PLAIN", "sender@example.com"
	res, err := c.Send(tx)
	if err != nil {
		n.t.Fatal(err)
	}
	return res, time.Since(start)
}

// TestRedisClusterFlagSharedBetweenMilters: an account detected through
// one milter is rejected as flagged by the other, from a clean address
// and to a harmless recipient; a release through either lets it through.
func TestRedisClusterFlagSharedBetweenMilters(t *testing.T) {
	srv := redistest.Start(t)
	z, lists := newZones(t)
	one := newRedisNode(t, z, lists, srv.URL(), redisNodeOptions{})
	two := newRedisNode(t, z, lists, srv.URL(), redisNodeOptions{})

	res, _ := one.send(authTx("Mallory@example.com", "198.51.100.7", "friend@example.org", dropbox))
	wantReject(t, res)
	f, err := two.store.Get(context.Background(), "mallory@example.com")
	if err != nil || f.Reason != action.ReasonRecipient || f.Recipient != dropbox {
		t.Fatalf("flag seen by the second milter: %+v, %v", f, err)
	}

	res, _ = two.send(authTx("mallory@example.com", "198.51.100.8", "mum@example.org"))
	wantReject(t, res)
	ev := two.logs.FilterField(zap.String("event", "account_compromised")).All()
	if len(ev) != 1 || ev[0].ContextMap()["reason"] != action.ReasonFlagged ||
		ev[0].ContextMap()["new"] != false {
		t.Fatalf("the second milter's detection events: %v", ev)
	}

	if err := one.store.Release(context.Background(), "mallory@example.com"); err != nil {
		t.Fatal(err)
	}
	res, _ = two.send(authTx("mallory@example.com", "198.51.100.8", "mum@example.org"))
	wantAccept(t, res)
}

// TestRedisOutage: with Redis gone, the milter answers within its budget
// as on_error says, still rejects what the lists prove, logs the outage
// once rather than per message, keeps the detection in memory, and writes
// it once Redis is back, by itself.
func TestRedisOutage(t *testing.T) {
	for _, tempfail := range []bool{false, true} {
		name := "accept"
		if tempfail {
			name = "tempfail"
		}
		t.Run(name, func(t *testing.T) {
			srv := redistest.Start(t)
			z, lists := newZones(t)
			const budget = time.Second
			node := newRedisNode(t, z, lists, srv.URL(), redisNodeOptions{tempfail: tempfail,
				timeout: budget, logInterval: time.Hour})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go node.accounts.Run(ctx, 50*time.Millisecond) // as serve runs it

			wantAccept(t, first(node.send(authTx("alice@example.com", "198.51.100.1", "a@example.org"))))
			srv.Stop()

			// Clean mail: the store read fails; on_error decides.
			for range 3 {
				res, took := node.send(authTx("bob@example.com", "198.51.100.2", "b@example.org"))
				if tempfail && (!res.Tempfailed() || res.SMTPCode != 451) {
					t.Fatalf("clean mail during the outage: %q, want 451", res)
				}
				if !tempfail {
					wantAccept(t, res)
				}
				if took > budget+time.Second {
					t.Errorf("answered after %v, beyond the %v budget", took, budget)
				}
			}
			// Listed: rejected all the same (451 under tempfail, as the
			// detection could not be stored), and kept in memory.
			res, took := node.send(authTx("mallory@example.com", listedIP, "c@example.org"))
			if tempfail && (!res.Tempfailed() || res.SMTPCode != 451) {
				t.Fatalf("listed mail during the outage: %q, want 451", res)
			}
			if !tempfail {
				wantReject(t, res)
			}
			if took > budget+time.Second {
				t.Errorf("rejection after %v, beyond the %v budget", took, budget)
			}
			if node.accounts.Pending() != 1 {
				t.Fatalf("%d detections in memory, want 1", node.accounts.Pending())
			}
			// The flagged account stays rejected from this milter.
			res, _ = node.send(authTx("mallory@example.com", "198.51.100.3", "d@example.org"))
			wantReject(t, res)

			if k := node.logs.FilterMessage("account store unavailable; detections are" +
				" kept in memory and written when it is back").Len(); k != 1 {
				t.Errorf("the outage was logged %d times, want once", k)
			}
			if k := node.logs.FilterMessage("lookups failed").Len(); k != 0 {
				t.Errorf("%d per-transaction \"lookups failed\" lines for the store", k)
			}

			srv.Restart() // empty: the flag must come from the milter's memory
			other := openRedisClient(t, srv.URL())
			deadline := time.Now().Add(10 * time.Second)
			for {
				f, err := other.Get(context.Background(), "mallory@example.com")
				if err == nil {
					if f.Reason != action.ReasonIP || f.ClientIP != listedIP {
						t.Errorf("flag written after the outage: %+v", f)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the detection was not written after Redis came back: %v", err)
				}
				time.Sleep(20 * time.Millisecond)
			}
			waitLog(t, node.logs, "account store available again")
			if node.accounts.Pending() != 0 || node.accounts.StoreDown() {
				t.Errorf("pending %d, down %v after recovery", node.accounts.Pending(),
					node.accounts.StoreDown())
			}
			wantAccept(t, first(node.send(authTx("bob@example.com", "198.51.100.2", "b@example.org"))))
		})
	}
}

// TestRedisHanging: a Redis that accepts connections and answers nothing
// costs a transaction its lookup budget once, not once per store call:
// after the read has failed, the detection goes to memory at once.
func TestRedisHanging(t *testing.T) {
	srv := redistest.Start(t)
	z, lists := newZones(t)
	const budget = 2 * time.Second
	node := newRedisNode(t, z, lists, srv.URL(), redisNodeOptions{timeout: budget})
	wantAccept(t, first(node.send(authTx("alice@example.com", "198.51.100.1", "a@example.org"))))

	srv.Pause()
	defer srv.Resume()
	res, took := node.send(authTx("mallory@example.com", listedIP, "c@example.org"))
	wantReject(t, res)
	// Waiting for the read and then the write would take twice the budget.
	if took > budget+1200*time.Millisecond {
		t.Errorf("answered after %v: the budget of %v was spent more than once", took, budget)
	}
	if node.accounts.Pending() != 1 || !node.accounts.StoreDown() {
		t.Errorf("pending %d, down %v; want the detection in memory, the store down",
			node.accounts.Pending(), node.accounts.StoreDown())
	}
}

func first(res mtasim.Result, _ time.Duration) mtasim.Result { return res }

func openRedisClient(t *testing.T, url string) *action.RedisStore {
	t.Helper()
	s, err := action.OpenRedis(url, action.RedisOptions{Prefix: "cluster:"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func waitLog(t *testing.T, logs *observer.ObservedLogs, msg string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for logs.FilterMessage(msg).Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no log line %q", msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
