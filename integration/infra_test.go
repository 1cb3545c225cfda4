//go:build integration

package integration

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestInfraPostfix checks the Postfix instance itself, on the listener
// without milter: SASL, XCLIENT (IPv4 and IPv6), relaying rules, delivery
// to discard and logging.
func TestInfraPostfix(t *testing.T) {
	needEnv(t)
	login := mta.account(t, "infra")

	t.Run("wrong password", func(t *testing.T) {
		c := dialSMTP(t, mta.plainSMTP, dialOptions{})
		if r := c.auth(login, "wrong"); r.Code != 535 {
			t.Fatalf("AUTH with a wrong password: want 535, got %v", r)
		}
		c.quit()
	})

	t.Run("authenticated", func(t *testing.T) {
		mark := mta.log.mark()
		c := dialSMTP(t, mta.plainSMTP, dialOptions{})
		c.mustAuth(login)
		id := mustAccept(t, c.send(login, []string{"someone@example.org"}, "infra"))
		c.quit()
		line := mta.waitDelivered(t, mark, id)
		if !strings.Contains(line, "to=<someone@example.org>") {
			t.Errorf("delivery line names another recipient: %s", line)
		}
		mta.log.waitFor(t, mark, 5*time.Second, id+": client=", "sasl_username="+login)
	})

	t.Run("xclient", func(t *testing.T) {
		for _, addr := range []string{"198.51.100.20", "2001:db8::20"} {
			mark := mta.log.mark()
			c := dialSMTP(t, mta.plainSMTP, dialOptions{})
			c.xclient(addr)

			// Outside mynetworks, relaying needs the login.
			tx := c.send("nobody@example.org", []string{"someone@example.org"}, "infra")
			if tx.Final.Code != 554 || !strings.Contains(tx.Final.Text, "Relay access denied") {
				t.Fatalf("unauthenticated relay from %s: want 554 Relay access denied, got %v",
					addr, tx.Final)
			}
			c.mustAuth(login)
			id := mustAccept(t, c.send(login, []string{"someone@example.org"}, "infra"))
			c.quit()
			mta.log.waitFor(t, mark, 5*time.Second, id+": client=", "["+addr+"]")
		}
	})

	t.Run("milter listener without milter", func(t *testing.T) {
		// milter_default_action=tempfail: with no milter running, mail on
		// the milter listener is refused, so a scenario's 250 can only
		// come from a running milter.
		c := dialSMTP(t, mta.milterSMTP, dialOptions{})
		if r := c.auth(login, saslPassword); r.Code/100 != 4 {
			t.Errorf("AUTH with no milter: want 4xx, got %v", r)
		}
		tx := c.send(login, []string{"someone@example.org"}, "infra")
		c.quit()
		if tx.Final.Code/100 != 4 || tx.QueueID != "" {
			t.Fatalf("mail with no milter: want 4xx, got %v", tx.Final)
		}
	})

	t.Run("loopback source address", func(t *testing.T) {
		mark := mta.log.mark()
		c := dialSMTP(t, mta.plainSMTP, dialOptions{Source: "127.0.0.9"})
		id := mustAccept(t, c.send("nobody@example.org", []string{"someone@example.org"}, "infra"))
		c.quit()
		mta.log.waitFor(t, mark, 5*time.Second, id+": client=", "[127.0.0.9]")
	})
}

// TestInfraRBLDNSD checks the test lists as rbldnsd serves them, and its
// query log.
func TestInfraRBLDNSD(t *testing.T) {
	needEnv(t)
	r := startRBLDNSD(t)
	mark := r.queryLog.mark()

	tests := []struct {
		name  string
		query string
		rcode int
		addrs []string
	}{
		{"test point", ipQueryName("127.0.0.2"), dns.RcodeSuccess, []string{listedCode}},
		{"localhost is not listed", ipQueryName("127.0.0.1"), dns.RcodeNameError, nil},
		{"listed loopback", ipQueryName(listedLoopback), dns.RcodeSuccess, []string{listedCode}},
		{"listed for XCLIENT", ipQueryName(listedXCLIENT), dns.RcodeSuccess, []string{listedCode}},
		{"clean IPv4", ipQueryName("198.51.100.20"), dns.RcodeNameError, nil},
		{"error code", ipQueryName(oddAnswer), dns.RcodeSuccess, []string{"127.255.255.254"}},
		{"listed IPv6", ipQueryName(listedIPv6), dns.RcodeSuccess, []string{listedCode}},
		{"in the listed IPv6 /48", ipQueryName("2001:db8:bad::77"), dns.RcodeSuccess, []string{listedCode}},
		{"clean IPv6", ipQueryName("2001:db8::20"), dns.RcodeNameError, nil},
		{"dropbox", rcptQueryName(dropbox), dns.RcodeSuccess, []string{listedCode}},
		{"dropbox, label in upper case", strings.ToUpper(rcptHash(dropbox)) + "." + rcptZone,
			dns.RcodeSuccess, []string{listedCode}},
		{"clean recipient", rcptQueryName("friend@example.org"), dns.RcodeNameError, nil},
		{"unknown zone", "2.0.0.127.other.test", dns.RcodeRefused, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rcode, addrs, err := r.query(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			if rcode != tt.rcode || !slices.Equal(addrs, tt.addrs) {
				t.Errorf("%s: got %s %v, want %s %v", tt.query,
					dns.RcodeToString[rcode], addrs, dns.RcodeToString[tt.rcode], tt.addrs)
			}
		})
	}
	r.waitQueried(t, mark, rcptQueryName(dropbox))
	r.waitQueried(t, mark, ipQueryName(listedIPv6))

	r.stop()
	if _, _, err := r.query(ipQueryName("127.0.0.2")); err == nil {
		t.Error("rbldnsd still answers after stop")
	}
}
