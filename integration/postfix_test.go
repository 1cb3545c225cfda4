//go:build integration

package integration

import (
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The scenarios: authbl-milter behind a real Postfix, against a real
// rbldnsd. Each test starts its own rbldnsd and milter; Postfix is shared.

// scene is what one scenario runs against.
type scene struct {
	dns *rbldnsd
	m   *milter
}

// newScene starts rbldnsd and the milter for the test.
func newScene(t *testing.T, opts milterOptions) scene {
	t.Helper()
	needEnv(t)
	r := startRBLDNSD(t)
	return scene{dns: r, m: startMilter(t, r, opts)}
}

// marks are the ends of the three logs before a step, so that a check
// sees only what the step caused.
type marks struct{ mta, dns, milter int64 }

func (s scene) mark() marks {
	return marks{mta.log.mark(), s.dns.queryLog.mark(), s.m.log.mark()}
}

// clean recipients: listed nowhere.
var cleanRcpts = []string{"friend@example.org", "Colleague@Example.NET"}

// session opens an SMTP session to the milter listener, sets the client
// address through XCLIENT when xclient is not empty, and logs in.
func session(t *testing.T, login, xclient string, opts dialOptions) *smtpClient {
	t.Helper()
	c := dialSMTP(t, mta.milterSMTP, opts)
	if xclient != "" {
		c.xclient(xclient)
	}
	if login != "" {
		c.mustAuth(login)
	}
	return c
}

var milterRejectQID = regexp.MustCompile(`\]: ([0-9A-F]+): milter-reject: `)

// checkReject checks the Postfix side of a milter reject of mail from
// client, and that the milter's detection event names the same queue id.
func checkReject(t *testing.T, since int64, client string, ev logEntry) {
	t.Helper()
	line := mta.log.waitFor(t, since, 10*time.Second, "milter-reject:", "["+client+"]", rejectText)
	m := milterRejectQID.FindStringSubmatch(line)
	if m == nil {
		return // NOQUEUE: rejected before Postfix had a queue file
	}
	if got := ev.str("queue_id"); got != m[1] {
		t.Errorf("detection event queue_id %q, Postfix logged the reject under %s: %s",
			got, m[1], line)
	}
}

// Scenario 1: an authenticated client on no list, sending to recipients
// on no list, gets its mail through, after both lists were asked.
func TestAuthenticatedCleanAccepted(t *testing.T) {
	s := newScene(t, milterOptions{})
	login := mta.account(t, "clean")
	const client = "198.51.100.20"
	mk := s.mark()

	c := session(t, login, client, dialOptions{})
	id := mustAccept(t, c.send(login, cleanRcpts, "clean"))
	c.quit()

	mta.waitDelivered(t, mk.mta, id)
	s.dns.waitQueried(t, mk.dns, ipQueryName(client))
	for _, rcpt := range cleanRcpts {
		s.dns.waitQueried(t, mk.dns, rcptQueryName(rcpt))
	}
	s.m.noDetection(t, mk.milter)
	if out, err := s.m.cli(t, "accounts", "list"); err != nil || strings.Contains(out, login) {
		t.Errorf("accounts list after clean mail: %v\n%s", err, out)
	}
}

// Scenario 2: an authenticated client on the IP list is rejected with the
// configured text, whether its address comes from XCLIENT or is the real
// source address of the connection.
func TestListedClientRejected(t *testing.T) {
	s := newScene(t, milterOptions{})
	cases := []struct {
		name    string
		account string
		client  string
		xclient bool
	}{
		{"xclient", "listedxc", listedXCLIENT, true},
		{"loopback source", "listedsrc", listedLoopback, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			login := mta.account(t, tc.account)
			mk := s.mark()

			var c *smtpClient
			if tc.xclient {
				c = session(t, login, tc.client, dialOptions{})
			} else {
				c = session(t, login, "", dialOptions{Source: tc.client})
			}
			tx := c.send(login, cleanRcpts, "listed client")
			c.quit()

			mustRefuse(t, tx, 550, rejectText)
			ev := s.m.detection(t, mk.milter, login, map[string]string{
				"reason": "ip", "list": "test-authbl", "client_ip": tc.client,
				"action": "reject", "new": "true",
			})
			checkReject(t, mk.mta, tc.client, ev)
			s.dns.waitQueried(t, mk.dns, ipQueryName(tc.client))
		})
	}
}

// Scenario 3: one listed dropbox among three recipients, written in mixed
// case, rejects the message.
func TestDropboxRecipientRejected(t *testing.T) {
	s := newScene(t, milterOptions{})
	login := mta.account(t, "dropboxsender")
	const client = "198.51.100.21"
	mk := s.mark()

	c := session(t, login, client, dialOptions{})
	rcpts := []string{"friend@example.org", "DropBox@Evil.EXAMPLE", "other@example.net"}
	tx := c.send(login, rcpts, "dropbox")
	c.quit()

	mustRefuse(t, tx, 550, rejectText)
	ev := s.m.detection(t, mk.milter, login, map[string]string{
		"reason": "recipient", "list": "test-authbl-rcpt", "recipient": dropbox,
		"client_ip": client, "action": "reject", "new": "true",
	})
	checkReject(t, mk.mta, client, ev)
	s.dns.waitQueried(t, mk.dns, rcptQueryName(dropbox))
}

// Scenario 4: a flagged account stays rejected from a clean address to
// clean recipients, until `accounts release`.
func TestFlaggedAccountUntilReleased(t *testing.T) {
	s := newScene(t, milterOptions{})
	login := mta.account(t, "reformed")

	// Flag it.
	mk := s.mark()
	c := session(t, login, "198.51.100.22", dialOptions{})
	mustRefuse(t, c.send(login, []string{dropbox}, "flag me"), 550, rejectText)
	c.quit()
	s.m.detection(t, mk.milter, login, map[string]string{"reason": "recipient", "new": "true"})

	// Clean address, clean recipients: still rejected.
	mk = s.mark()
	c = session(t, login, "198.51.100.23", dialOptions{})
	tx := c.send(login, cleanRcpts, "flagged")
	c.quit()
	mustRefuse(t, tx, 550, rejectText)
	ev := s.m.detection(t, mk.milter, login, map[string]string{
		"reason": "flagged", "client_ip": "198.51.100.23", "new": "false",
	})
	checkReject(t, mk.mta, "198.51.100.23", ev)

	out, err := s.m.cli(t, "accounts", "list")
	if err != nil || !hasLinePrefix(out, login) {
		t.Fatalf("accounts list should name %s: %v\n%s", login, err, out)
	}
	out, err = s.m.cli(t, "accounts", "show", login)
	if err != nil || !strings.Contains(out, dropbox) {
		t.Errorf("accounts show %s should name the dropbox: %v\n%s", login, err, out)
	}

	// Released: accepted again.
	if out, err := s.m.cli(t, "accounts", "release", login); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := s.m.cli(t, "accounts", "list"); err != nil || hasLinePrefix(out, login) {
		t.Fatalf("accounts list after release still names %s: %v\n%s", login, err, out)
	}
	// No wait: the command returns once the running milter has seen it.
	mk = s.mark()
	c = session(t, login, "198.51.100.23", dialOptions{})
	id := mustAccept(t, c.send(login, cleanRcpts, "released"))
	c.quit()
	mta.waitDelivered(t, mk.mta, id)
	s.m.noDetection(t, mk.milter)
}

func hasLinePrefix(out, prefix string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, prefix) {
			return true
		}
	}
	return false
}

// Scenario 5a: action quarantine puts the message on hold; the client
// sees 250. Mail of a clean account still flows.
func TestActionQuarantine(t *testing.T) {
	s := newScene(t, milterOptions{Mode: "quarantine"})
	login := mta.account(t, "held")
	mk := s.mark()

	c := session(t, login, listedXCLIENT, dialOptions{})
	id := mustAccept(t, c.send(login, cleanRcpts, "quarantine"))
	c.quit()
	t.Cleanup(func() { mta.deleteQueued(t, id) })

	held := mta.waitQueued(t, id, "hold", 10*time.Second)
	if held.Sender != login {
		t.Errorf("held message sender %q, want %q", held.Sender, login)
	}
	mta.log.waitFor(t, mk.mta, 10*time.Second, id+": milter-hold:")
	s.m.detection(t, mk.milter, login, map[string]string{
		"reason": "ip", "action": "quarantine", "queue_id": id, "new": "true",
	})

	other := mta.account(t, "notheld")
	mk = s.mark()
	c = session(t, other, "198.51.100.24", dialOptions{})
	id2 := mustAccept(t, c.send(other, cleanRcpts, "not held"))
	c.quit()
	mta.waitDelivered(t, mk.mta, id2)
}

// Scenario 5b: action log delivers the mail and logs the detection.
func TestActionLog(t *testing.T) {
	s := newScene(t, milterOptions{Mode: "log"})
	login := mta.account(t, "logged")
	mk := s.mark()

	c := session(t, login, listedXCLIENT, dialOptions{})
	rcpts := []string{"friend@example.org", dropbox}
	id := mustAccept(t, c.send(login, rcpts, "log only"))
	c.quit()

	mta.waitDelivered(t, mk.mta, id)
	s.m.detection(t, mk.milter, login, map[string]string{
		"action": "log", "client_ip": listedXCLIENT, "queue_id": id, "new": "true",
	})
	if len(mta.log.grep(mk.mta, "milter-reject")) > 0 || len(mta.log.grep(mk.mta, "milter-hold")) > 0 {
		t.Errorf("action log, yet Postfix rejected or held:\n%s",
			strings.Join(mta.log.linesSince(mk.mta), "\n"))
	}
}

// Scenario 6: IPv6 clients, set through XCLIENT ADDR=IPV6:..., are looked
// up by nibbles.
func TestIPv6Client(t *testing.T) {
	s := newScene(t, milterOptions{})
	cases := []struct {
		name, account, client string
		listed                bool
	}{
		{"listed address", "v6listed", listedIPv6, true},
		{"in a listed /48", "v6net", "2001:db8:bad::77", true},
		{"clean", "v6clean", "2001:db8::20", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			login := mta.account(t, tc.account)
			mk := s.mark()

			c := session(t, login, tc.client, dialOptions{})
			tx := c.send(login, cleanRcpts, "ipv6")
			c.quit()

			s.dns.waitQueried(t, mk.dns, ipQueryName(tc.client))
			if !tc.listed {
				mta.waitDelivered(t, mk.mta, mustAccept(t, tx))
				s.m.noDetection(t, mk.milter)
				return
			}
			mustRefuse(t, tx, 550, rejectText)
			ev := s.m.detection(t, mk.milter, login, map[string]string{
				"reason": "ip", "client_ip": tc.client, "list": "test-authbl",
			})
			checkReject(t, mk.mta, tc.client, ev)
		})
	}
}

// Field case 1: an IP list answering outside its match set
// (127.255.255.254) does not list the client; a warning names the list
// and the code, and the mail goes through.
func TestUnexpectedAnswerNotListed(t *testing.T) {
	s := newScene(t, milterOptions{})
	login := mta.account(t, "oddanswer")
	mk := s.mark()

	c := session(t, login, oddAnswer, dialOptions{})
	id := mustAccept(t, c.send(login, cleanRcpts, "unexpected answer"))
	c.quit()

	mta.waitDelivered(t, mk.mta, id)
	s.m.noDetection(t, mk.milter)
	s.m.log.waitFor(t, mk.milter, 5*time.Second, `"level":"warn"`, "test-authbl", "127.255.255.254")
}

// Scenario 7: mail without SMTP AUTH (relayed for mynetworks) is not
// checked at all: no DNS query, even from a listed address to a dropbox.
func TestUnauthenticatedNotChecked(t *testing.T) {
	s := newScene(t, milterOptions{})
	mk := s.mark()

	c := session(t, "", "", dialOptions{Source: listedLoopback})
	rcpts := []string{"friend@example.org", dropbox}
	id := mustAccept(t, c.send("someone@example.org", rcpts, "unauthenticated"))
	c.quit()

	mta.waitDelivered(t, mk.mta, id)
	time.Sleep(300 * time.Millisecond) // let a stray query reach the log
	if q := s.dns.queryLog.linesSince(mk.dns); len(q) > 0 {
		t.Errorf("unauthenticated mail caused DNS queries:\n%s", strings.Join(q, "\n"))
	}
	s.m.noDetection(t, mk.milter)
}

// Scenario 8: the DNS server fails. A failure is never a listing:
// on_error=accept lets listed mail through and logs the failure;
// on_error=tempfail answers 4xx. Either way within the milter's budget,
// well before Postfix's milter timeout.
func TestDNSFailure(t *testing.T) {
	cases := []struct {
		name    string
		onError string
		silent  bool // a server that never answers, instead of none
	}{
		{"stopped, accept", "accept", false},
		{"stopped, tempfail", "tempfail", false},
		{"silent, accept", "accept", true},
		{"silent, tempfail", "tempfail", true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			needEnv(t)
			r := startRBLDNSD(t)
			opts := milterOptions{OnError: tc.onError, Timeout: "3s"}
			if tc.silent {
				opts.DNS = blackhole(t)
			}
			m := startMilter(t, r, opts)
			s := scene{dns: r, m: m}
			r.stop()

			login := mta.account(t, "dnsdown"+string(rune('a'+i)))
			mk := s.mark()
			start := time.Now()
			c := session(t, login, listedXCLIENT, dialOptions{})
			tx := c.send(login, []string{dropbox}, "dns down")
			c.quit()
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("the transaction took %v with the DNS server down", d)
			}

			var qid string
			if tc.onError == "accept" {
				qid = mustAccept(t, tx)
				mta.waitDelivered(t, mk.mta, qid)
			} else {
				// 451 from the milter itself: Postfix logs milter-reject.
				// (451 4.3.5 without that line would be Postfix's
				// milter_default_action, the milter unreachable.)
				if tx.Final.Code != 451 || tx.QueueID != "" {
					t.Fatalf("on_error=tempfail: want 451, got %v (%+v)", tx.Final, tx)
				}
				line := mta.log.waitFor(t, mk.mta, 10*time.Second, "milter-reject:", tx.Final.Text)
				if sub := milterRejectQID.FindStringSubmatch(line); sub != nil {
					qid = sub[1]
				}
			}
			waitFailureLogged(t, m, mk.milter, login, qid)
			m.noDetection(t, mk.milter)
		})
	}
}

// waitFailureLogged waits for a warn or error line from the milter about
// the transaction of account (or with its queue id): a line of the
// start-up self-test does not count.
func waitFailureLogged(t *testing.T, m *milter, since int64, account, queueID string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, e := range m.entries(since) {
			lvl := e.str("level")
			ours := e.str("account") == account || (queueID != "" && e.str("queue_id") == queueID)
			if ours && (lvl == "warn" || lvl == "error") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the milter logged no warning of the DNS failure; its log:\n%s",
				strings.Join(m.log.linesSince(since), "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// blackhole returns the address of a UDP socket that reads queries and
// never answers, closed at the end of the test.
func blackhole(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String()
}

// Scenario 9: several transactions in one SMTP session, each judged on
// its own, whatever the milter answered before.
func TestSeveralMessagesOneSession(t *testing.T) {
	s := newScene(t, milterOptions{})

	t.Run("accepted, dropbox, then flagged", func(t *testing.T) {
		login := mta.account(t, "session1")
		const client = "198.51.100.25"
		mk := s.mark()
		c := session(t, login, client, dialOptions{})

		id := mustAccept(t, c.send(login, cleanRcpts, "first"))
		mta.waitDelivered(t, mk.mta, id)
		s.m.noDetection(t, mk.milter)

		mk = s.mark()
		mustRefuse(t, c.send(login, []string{"friend@example.org", dropbox}, "second"),
			550, rejectText)
		s.m.detection(t, mk.milter, login, map[string]string{
			"reason": "recipient", "client_ip": client, "new": "true",
		})

		mk = s.mark()
		mustRefuse(t, c.send(login, cleanRcpts, "third"), 550, rejectText)
		s.m.detection(t, mk.milter, login, map[string]string{
			"reason": "flagged", "client_ip": client, "new": "false",
		})
		c.quit()
	})

	t.Run("listed client, twice", func(t *testing.T) {
		login := mta.account(t, "session2")
		mk := s.mark()
		c := session(t, login, listedXCLIENT, dialOptions{})
		mustRefuse(t, c.send(login, cleanRcpts, "first"), 550, rejectText)
		mustRefuse(t, c.send(login, cleanRcpts, "second"), 550, rejectText)
		c.quit()
		if n := len(s.m.find(mk.milter, map[string]string{
			"event": "account_compromised", "account": login})); n != 2 {
			t.Errorf("want 2 detection events, got %d", n)
		}
	})

	t.Run("unauthenticated, then authenticated", func(t *testing.T) {
		// The first transaction is accepted without lookups; the milter
		// must still know the client address for the second.
		login := mta.account(t, "session3")
		mk := s.mark()
		c := session(t, "", listedXCLIENT, dialOptions{})
		tx := c.send("someone@example.org", cleanRcpts, "unauthenticated")
		if tx.Final.Code != 554 {
			// Outside mynetworks: Postfix refuses the relay itself.
			t.Fatalf("unauthenticated relay from %s: want 554, got %v", listedXCLIENT, tx.Final)
		}
		c.mustAuth(login)
		mustRefuse(t, c.send(login, cleanRcpts, "authenticated"), 550, rejectText)
		c.quit()
		s.m.detection(t, mk.milter, login, map[string]string{
			"reason": "ip", "client_ip": listedXCLIENT,
		})
	})

	t.Run("unauthenticated accepted, then authenticated", func(t *testing.T) {
		login := mta.account(t, "session4")
		mk := s.mark()
		c := session(t, "", "", dialOptions{Source: listedLoopback})
		id := mustAccept(t, c.send("someone@example.org", cleanRcpts, "unauthenticated"))
		mta.waitDelivered(t, mk.mta, id)
		c.mustAuth(login)
		mustRefuse(t, c.send(login, cleanRcpts, "authenticated"), 550, rejectText)
		c.quit()
		s.m.detection(t, mk.milter, login, map[string]string{
			"reason": "ip", "client_ip": listedLoopback,
		})
	})
}
