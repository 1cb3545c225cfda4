package milter_test

import (
	"strings"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// The macro sets an MTA sends at MAIL FROM, as seen with the real ones.
// An MTA that applies the milter's symbol list sends only what the milter
// asked for, and the auth macros only when the session authenticated; an
// MTA that ignores it sends its own list (Sendmail's default
// confMILTER_MACROS_ENVFROM shown here, and a site's list without the
// auth macros).
var (
	symListUnauth = []string{"i", "4ABC123", "{client_addr}", listedIP,
		"{client_name}", "client.example"}
	symListAuth = append([]string{"{auth_authen}", "a@example.com",
		"{auth_type}", "PLAIN"}, symListUnauth...)
	ownListNoAuth = []string{"i", "4ABC123", "{mail_addr}", "a@example.com",
		"{mail_host}", "example.com.", "{mail_mailer}", "esmtp"}
	ownListAuth = append([]string{"{auth_authen}", "a@example.com",
		"{auth_type}", "PLAIN", "{auth_ssf}", "0"}, ownListNoAuth...)
	typeWithoutLogin = append([]string{"{auth_type}", "PLAIN"}, symListUnauth...)
)

// sendWithMailMacros runs one transaction whose MAIL FROM carries exactly
// mail (name, value, ...), the way an MTA with that macro list would, and
// returns the milter's final action.
func sendWithMailMacros(t *testing.T, r *rig, mail []string, rcpt string) gomilter.ActionCode {
	t.Helper()
	cl := gomilter.NewClientWithOptions("tcp", r.addr, gomilter.ClientOptions{
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
		ActionMask:   gomilter.OptAddHeader | gomilter.OptQuarantine,
	})
	s, err := cl.Session()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	steps := []func() (*gomilter.Action, error){
		func() (*gomilter.Action, error) {
			if err := s.Macros(gomilter.CodeConn, "j", "mx.example.test", "{daemon_name}", "MTA"); err != nil {
				return nil, err
			}
			return s.Conn("client.example", gomilter.FamilyInet, 25, listedIP)
		},
		func() (*gomilter.Action, error) { return s.Helo("client.example") },
		func() (*gomilter.Action, error) {
			if err := s.Macros(gomilter.CodeMail, mail...); err != nil {
				return nil, err
			}
			return s.Mail("<a@example.com>", nil)
		},
		func() (*gomilter.Action, error) { return s.Rcpt("<"+rcpt+">", nil) },
		func() (*gomilter.Action, error) { return s.HeaderEnd() },
		func() (*gomilter.Action, error) {
			_, act, err := s.End()
			return act, err
		},
	}
	for _, step := range steps {
		act, err := step()
		if err != nil {
			t.Fatal(err)
		}
		if act.Code != gomilter.ActContinue {
			return act.Code
		}
	}
	return gomilter.ActContinue
}

// noLoginWarnings returns the warnings about a missing SASL login.
func noLoginWarnings(r *rig) []observer.LoggedEntry {
	return r.logs.FilterLevelExact(zapcore.WarnLevel).
		FilterMessageSnippet("{auth_authen}").All()
}

func TestMissingLoginWarning(t *testing.T) {
	tests := []struct {
		name string
		// mails are the MAIL FROM macro sets of successive transactions.
		mails [][]string
		// warn is the part of the one warning expected; empty: none.
		warn string
		// gotLogin: a later transaction brought the login after a
		// warning, which an info line says.
		gotLogin bool
	}{
		{"symbol list applied, unauthenticated",
			[][]string{symListUnauth, symListUnauth, symListAuth, symListUnauth}, "", false},
		{"own list without auth macros",
			[][]string{ownListNoAuth, ownListNoAuth, ownListNoAuth}, "instead of those the milter asked for", false},
		{"no macros at MAIL FROM",
			[][]string{{}, {}}, "instead of those the milter asked for", false},
		{"own list with auth macros, login first",
			[][]string{ownListAuth, ownListNoAuth, ownListNoAuth}, "", false},
		{"own list with auth macros, unauthenticated first",
			[][]string{ownListNoAuth, ownListAuth, ownListNoAuth}, "instead of those the milter asked for", true},
		{"auth type without login",
			[][]string{typeWithoutLogin, typeWithoutLogin}, "reports an authenticated session", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, rigOptions{})
			for _, mail := range tt.mails {
				sendWithMailMacros(t, r, mail, "friend@example.org")
			}

			warnings := noLoginWarnings(r)
			switch {
			case tt.warn == "" && len(warnings) > 0:
				t.Fatalf("warned: %q", warnings[0].Message)
			case tt.warn != "" && len(warnings) != 1:
				t.Fatalf("%d warnings about the login, want 1", len(warnings))
			case tt.warn != "":
				w := warnings[0]
				if !strings.Contains(w.Message, tt.warn) ||
					!strings.Contains(w.Message, "confMILTER_MACROS_ENVFROM") {
					t.Errorf("warning %q: want %q and where to fix it", w.Message, tt.warn)
				}
				if _, ok := w.ContextMap()["macros"]; !ok {
					t.Errorf("warning without the macro names: %v", w.ContextMap())
				}
			}
			info := r.logs.FilterMessageSnippet("does send the SASL login").Len()
			if (info == 1) != tt.gotLogin {
				t.Errorf("%d lines saying the login does arrive, want %v", info, tt.gotLogin)
			}
		})
	}
}

// The login, whichever list brought it, is checked: the watch only
// watches.
func TestLoginFromOwnListIsChecked(t *testing.T) {
	r := newRig(t, rigOptions{})
	if got := sendWithMailMacros(t, r, ownListAuth, "friend@example.org"); got != gomilter.ActReplyCode {
		t.Fatalf("listed client with the login in the MTA's own list: action %q, want a reply code", rune(got))
	}
	if got := sendWithMailMacros(t, r, ownListNoAuth, dropbox); got != gomilter.ActAccept {
		t.Fatalf("no login: action %q, want accept", rune(got))
	}
}
