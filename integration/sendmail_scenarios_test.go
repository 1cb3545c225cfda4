//go:build integration

package integration

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The scenarios behind a real Sendmail 8.17: SMTP AUTH with Cyrus sasldb,
// the milter as INPUT_MAIL_FILTER with F=T, rbldnsd as the list server.
// Sendmail has no XCLIENT: a listed client really connects from a listed
// loopback address. Each test starts its own rbldnsd and milter; the
// Sendmail instance is shared, except where a test needs another
// configuration.

// smScene is what one Sendmail scenario runs against.
type smScene struct {
	sm  *sendmail
	dns *rbldnsd
	m   *milter
}

// newSendmailScene starts rbldnsd and a milter where sm (the shared
// instance when nil) calls it.
func newSendmailScene(t *testing.T, sm *sendmail, opts milterOptions) smScene {
	t.Helper()
	needSendmail(t)
	if sm == nil {
		sm = smta
	}
	r := startRBLDNSD(t)
	opts.Listen = sm.milterAddr
	return smScene{sm: sm, dns: r, m: startMilter(t, r, opts)}
}

func (s smScene) mark() marks {
	return marks{s.sm.log.mark(), s.dns.queryLog.mark(), s.m.log.mark()}
}

// session connects from source (a loopback address; empty: 127.0.0.1)
// and logs in when login is not empty.
func (s smScene) session(t *testing.T, login, source string) *smtpClient {
	t.Helper()
	c := dialSMTP(t, s.sm.smtp, dialOptions{Source: source})
	if login != "" {
		c.mustAuth(login)
	}
	return c
}

// Clean loopback sources: on no list.
const (
	smCleanSource  = "127.0.0.20"
	smCleanSource2 = "127.0.0.21"
)

// checkSendmailReject checks that Sendmail logged the milter's reject of
// the transaction the detection event ev is about, under its queue id.
func checkSendmailReject(t *testing.T, s smScene, since int64, ev logEntry) {
	t.Helper()
	qid := ev.str("queue_id")
	if qid == "" {
		t.Errorf("detection event without queue_id: %v", ev)
		return
	}
	s.sm.log.waitFor(t, since, 10*time.Second, qid+":", "Milter", "reject=550 "+rejectText)
}

// mailMacros returns the macro names the milter saw at MAIL FROM, from
// its debug line, for the transaction after mark.
func mailMacros(t *testing.T, m *milter, mark int64) []string {
	t.Helper()
	e := m.waitEntry(t, mark, map[string]string{"msg": "macros at MAIL FROM"})
	raw, _ := e["macros"].([]any)
	var names []string
	for _, v := range raw {
		names = append(names, fmt.Sprint(v))
	}
	return names
}

// noLoginWarning fails the test if the milter warned that it receives
// no SASL login.
func noLoginWarning(t *testing.T, m *milter, mark int64) {
	t.Helper()
	for _, e := range m.entries(mark) {
		if e.str("level") == "warn" && strings.Contains(e.str("msg"), "{auth_authen}") {
			t.Errorf("the milter warned about the SASL login: %v", e)
		}
	}
}

// TestInfraSendmail checks the Sendmail instance itself: F=T (with no
// milter running, mail is tempfailed, so a scenario's 250 can only come
// from a running milter; even AUTH is), then SASL.
func TestInfraSendmail(t *testing.T) {
	needSendmail(t)
	login := smta.account(t, "infra")

	t.Run("no milter", func(t *testing.T) {
		mark := smta.log.mark()
		c := dialSMTP(t, smta.smtp, dialOptions{})
		if r := c.auth(login, saslPassword); r.Code/100 != 4 {
			t.Errorf("AUTH with no milter: want 4xx, got %v", r)
		}
		tx := c.send("someone@example.org", []string{"friend@example.org"}, "infra")
		c.quit()
		if tx.Final.Code/100 != 4 || tx.QueueID != "" {
			t.Fatalf("mail with no milter: want 4xx, got %v", tx.Final)
		}
		smta.log.waitFor(t, mark, 5*time.Second, "Milter", "error connecting to filter")
	})

	t.Run("wrong password", func(t *testing.T) {
		s := newSendmailScene(t, nil, milterOptions{})
		c := dialSMTP(t, s.sm.smtp, dialOptions{})
		if r := c.auth(login, "wrong"); r.Code != 535 {
			t.Fatalf("AUTH with a wrong password: want 535, got %v", r)
		}
		c.mustAuth(login)
		c.quit()
	})
}

// Scenario 1: an authenticated client on no list, sending to recipients
// on no list, gets its mail through, after both lists were asked; the
// milter knows the message by Sendmail's queue id.
func TestSendmailAuthenticatedCleanAccepted(t *testing.T) {
	s := newSendmailScene(t, nil, milterOptions{})
	login := s.sm.account(t, "clean")
	mk := s.mark()

	c := s.session(t, login, smCleanSource)
	id := mustAccept(t, c.send(login, cleanRcpts, "clean"))
	c.quit()

	s.dns.waitQueried(t, mk.dns, ipQueryName(smCleanSource))
	for _, rcpt := range cleanRcpts {
		s.dns.waitQueried(t, mk.dns, rcptQueryName(rcpt))
	}
	s.m.waitEntry(t, mk.milter, map[string]string{"msg": "transaction checked",
		"account": login, "queue_id": id, "client_ip": smCleanSource, "outcome": "accept"})
	s.m.noDetection(t, mk.milter)

	out, err := s.sm.run("-bp")
	if err != nil || !strings.Contains(out, id) {
		t.Errorf("mailq does not list %s: %v\n%s", id, err, out)
	}
}

// Scenario 2: an authenticated client connecting from a listed address is
// rejected with the configured text.
func TestSendmailListedClientRejected(t *testing.T) {
	s := newSendmailScene(t, nil, milterOptions{})
	login := s.sm.account(t, "listedsrc")
	mk := s.mark()

	c := s.session(t, login, listedLoopback)
	tx := c.send(login, cleanRcpts, "listed client")
	c.quit()

	mustRefuse(t, tx, 550, rejectText)
	ev := s.m.detection(t, mk.milter, login, map[string]string{
		"reason": "ip", "list": "test-authbl", "client_ip": listedLoopback,
		"action": "reject", "new": "true",
	})
	checkSendmailReject(t, s, mk.mta, ev)
	s.dns.waitQueried(t, mk.dns, ipQueryName(listedLoopback))
}

// Scenario 3: one listed dropbox among three recipients, written in mixed
// case, rejects the message.
func TestSendmailDropboxRecipientRejected(t *testing.T) {
	s := newSendmailScene(t, nil, milterOptions{})
	login := s.sm.account(t, "dropboxsender")
	mk := s.mark()

	c := s.session(t, login, smCleanSource2)
	rcpts := []string{"friend@example.org", "DropBox@Evil.EXAMPLE", "other@example.net"}
	tx := c.send(login, rcpts, "dropbox")
	c.quit()

	mustRefuse(t, tx, 550, rejectText)
	ev := s.m.detection(t, mk.milter, login, map[string]string{
		"reason": "recipient", "list": "test-authbl-rcpt", "recipient": dropbox,
		"client_ip": smCleanSource2, "action": "reject", "new": "true",
	})
	checkSendmailReject(t, s, mk.mta, ev)
	s.dns.waitQueried(t, mk.dns, rcptQueryName(dropbox))
}

// Scenario 4: action quarantine: the client sees 250, and the message is
// in Sendmail's quarantine (mailq -qQ lists it, with a reason that names
// the account), not in the ordinary queue.
func TestSendmailQuarantine(t *testing.T) {
	s := newSendmailScene(t, nil, milterOptions{Mode: "quarantine"})
	login := s.sm.account(t, "held")
	mk := s.mark()

	c := s.session(t, login, listedLoopback)
	id := mustAccept(t, c.send(login, cleanRcpts, "quarantine"))
	c.quit()

	s.m.detection(t, mk.milter, login, map[string]string{
		"reason": "ip", "action": "quarantine", "queue_id": id, "new": "true",
	})
	held := s.sm.quarantined(t, id)
	if held == "" {
		out, _ := s.sm.run("-bp", "-qQ")
		t.Fatalf("mailq -qQ does not list %s:\n%s", id, out)
	}
	if !strings.Contains(held, "QUARANTINE:") || !strings.Contains(held, login) {
		t.Errorf("the quarantine reason does not name %s:\n%s", login, held)
	}
	out, err := s.sm.run("-bp")
	if err != nil || queueBlock(out, id) != "" {
		t.Errorf("the quarantined message is in the ordinary queue too: %v\n%s", err, out)
	}
	s.sm.log.waitFor(t, mk.mta, 5*time.Second, id+":", "quarantine")
}

// Scenario 5: mail without SMTP AUTH (relayed for loopback clients) is
// not checked at all: no DNS query, even from a listed address to a
// dropbox. Sendmail sends no auth macro for it, not even an empty one,
// and that raises no warning.
func TestSendmailUnauthenticatedNotChecked(t *testing.T) {
	s := newSendmailScene(t, nil, milterOptions{})
	mk := s.mark()

	c := s.session(t, "", listedLoopback)
	rcpts := []string{"friend@example.org", dropbox}
	mustAccept(t, c.send("someone@example.org", rcpts, "unauthenticated"))
	c.quit()

	names := mailMacros(t, s.m, mk.milter)
	for _, name := range names {
		if strings.HasPrefix(name, "{auth_") {
			t.Errorf("unauthenticated session, yet the MTA sent %s; macros: %v", name, names)
		}
	}
	time.Sleep(300 * time.Millisecond) // let a stray query reach the log
	if q := s.dns.queryLog.linesSince(mk.dns); len(q) > 0 {
		t.Errorf("unauthenticated mail caused DNS queries:\n%s", strings.Join(q, "\n"))
	}
	s.m.noDetection(t, mk.milter)
	noLoginWarning(t, s.m, 0)
}

// Scenario 6: a site whose confMILTER_MACROS_ENVFROM lacks the auth
// macros. Sendmail 8.17 sends a milter the macros it asks for through
// its symbol list instead of that list (seen), and authbl-milter asks for
// {auth_authen} there: the login still arrives, listed clients are still
// rejected, and the milter has nothing to warn about. (A milter relying
// on the site's list would see every session as unauthenticated; for an
// MTA that ignores the symbol list, the milter warns once: see
// milter/authmacros_test.go.)
func TestSendmailSiteEnvFromWithoutAuthMacros(t *testing.T) {
	needSendmail(t)
	const siteList = "i, {mail_mailer}, {mail_host}, {mail_addr}"
	sm, err := startSendmail(testDir(t, "sendmail"), sendmailOptions{EnvFromMacros: siteList})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sm.stop)
	cf, err := run("grep", "-x", "O Milter.macros.envfrom="+siteList, sm.cfPath)
	if err != nil {
		t.Fatalf("the site's macro list is not in sendmail.cf: %v\n%s", err, cf)
	}
	s := newSendmailScene(t, sm, milterOptions{})
	login := sm.account(t, "sitelist")

	t.Run("authenticated, listed client", func(t *testing.T) {
		mk := s.mark()
		c := s.session(t, login, listedLoopback)
		tx := c.send(login, cleanRcpts, "site list")
		c.quit()

		mustRefuse(t, tx, 550, rejectText)
		names := mailMacros(t, s.m, mk.milter)
		if !slices.Contains(names, "{auth_authen}") || slices.Contains(names, "{mail_addr}") {
			t.Errorf("macros at MAIL FROM %v: want the milter's list, with {auth_authen}", names)
		}
		ev := s.m.detection(t, mk.milter, login, map[string]string{
			"reason": "ip", "client_ip": listedLoopback, "action": "reject",
		})
		checkSendmailReject(t, s, mk.mta, ev)
	})

	t.Run("unauthenticated", func(t *testing.T) {
		mk := s.mark()
		c := s.session(t, "", smCleanSource)
		mustAccept(t, c.send("someone@example.org", cleanRcpts, "site list"))
		c.quit()
		mailMacros(t, s.m, mk.milter)
		if q := s.dns.queryLog.linesSince(mk.dns); len(q) > 0 {
			t.Errorf("unauthenticated mail caused DNS queries:\n%s", strings.Join(q, "\n"))
		}
	})

	noLoginWarning(t, s.m, 0)
	if t.Failed() {
		t.Logf("Sendmail's log:\n%s", sm.tail())
		t.Logf("its config: %s", filepath.Join(sm.dir, "sendmail.mc"))
	}
}
