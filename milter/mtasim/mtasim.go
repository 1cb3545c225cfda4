// Package mtasim plays the MTA's side of the milter protocol, the way
// Postfix does with its default macros plus those a milter asks for. The
// demo and the tests drive the real milter server through it; it uses
// go-milter's client, restricted to protocol version 2.
package mtasim

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	gomilter "github.com/emersion/go-milter"
)

// Transaction is one SMTP transaction as the MTA reports it.
type Transaction struct {
	Login      string   // SASL login; empty: not authenticated
	AuthType   string   // SASL mechanism, such as PLAIN
	ClientAddr string   // the {client_addr} macro at MAIL FROM; empty: none
	From       string   // envelope sender
	Rcpts      []string // envelope recipients, as given to RCPT TO
	QueueID    string   // the {i} macro
}

// Result is the milter's final answer to a transaction.
type Result struct {
	Stage      string              // mail, rcpt, eoh or eom: where it was given
	Action     gomilter.ActionCode // accept, reject, tempfail, reply code, ...
	SMTPCode   int                 // for a reply code
	SMTPText   string              // for a reply code
	Quarantine string              // the reason, when the message was held
}

// String describes the result the way an operator reads an MTA log.
func (r Result) String() string {
	var s string
	switch r.Action {
	case gomilter.ActAccept, gomilter.ActContinue:
		s = "accept"
	case gomilter.ActReject:
		s = "reject"
	case gomilter.ActTempFail:
		s = "tempfail"
	case gomilter.ActDiscard:
		s = "discard"
	case gomilter.ActReplyCode:
		s = strconv.Itoa(r.SMTPCode) + " " + r.SMTPText
	default:
		s = fmt.Sprintf("action %q", rune(r.Action))
	}
	if r.Quarantine != "" {
		s = "accept, quarantined: " + r.Quarantine
	}
	return s
}

// Rejected reports a permanent failure (5xx).
func (r Result) Rejected() bool {
	return r.Action == gomilter.ActReject ||
		(r.Action == gomilter.ActReplyCode && r.SMTPCode >= 500)
}

// Tempfailed reports a temporary failure (4xx).
func (r Result) Tempfailed() bool {
	return r.Action == gomilter.ActTempFail ||
		(r.Action == gomilter.ActReplyCode && r.SMTPCode >= 400 && r.SMTPCode < 500)
}

// Accepted reports that the message goes on (held or not).
func (r Result) Accepted() bool { return !r.Rejected() && !r.Tempfailed() }

// Conn is one MTA connection to the milter, carrying one SMTP session.
type Conn struct {
	s *gomilter.ClientSession
}

// Options describes the SMTP client of the session.
type Options struct {
	ClientAddr string // the client's IP address for the connect event
	ClientName string // its host name
	Helo       string
	Timeout    time.Duration // per read and write; 0: 10s
}

// Dial connects to a milter at network/address ("tcp", "127.0.0.1:8899"
// or "unix", "/run/milter.sock") and sends the connect and HELO events.
func Dial(network, address string, o Options) (*Conn, error) {
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	cl := gomilter.NewClientWithOptions(network, address, gomilter.ClientOptions{
		ReadTimeout:  o.Timeout,
		WriteTimeout: o.Timeout,
		// Only version 2 actions: the library's server speaks v2, and
		// the client refuses to downgrade past anything newer.
		ActionMask:   gomilter.OptAddHeader | gomilter.OptQuarantine,
		ProtocolMask: 0,
	})
	s, err := cl.Session()
	if err != nil {
		return nil, err
	}
	c := &Conn{s: s}
	if err := c.connect(o); err != nil {
		s.Close()
		return nil, err
	}
	return c, nil
}

func (c *Conn) connect(o Options) error {
	family, addr := gomilter.FamilyInet, o.ClientAddr
	switch {
	case addr == "":
		family = gomilter.FamilyUnknown
	case strings.Contains(addr, ":"):
		family = gomilter.FamilyInet6
	}
	if err := c.s.Macros(gomilter.CodeConn, "{client_addr}", addr,
		"{client_name}", o.ClientName, "j", "mx.example.test"); err != nil {
		return err
	}
	act, err := c.s.Conn(o.ClientName, family, 25, addr)
	if err != nil {
		return err
	}
	if act.Code != gomilter.ActContinue {
		return fmt.Errorf("mtasim: milter answered %q at connect", rune(act.Code))
	}
	if o.Helo != "" {
		if _, err := c.s.Helo(o.Helo); err != nil {
			return err
		}
	}
	return nil
}

// Close ends the session.
func (c *Conn) Close() error { return c.s.Close() }

// Send runs one transaction and returns the milter's answer. An answer
// other than continue ends the transaction where it was given, as an MTA
// does.
func (c *Conn) Send(t Transaction) (Result, error) {
	kv := []string{"i", t.QueueID, "{client_addr}", t.ClientAddr}
	if t.Login != "" {
		kv = append(kv, "{auth_authen}", t.Login, "{auth_type}", t.AuthType)
	}
	if err := c.s.Macros(gomilter.CodeMail, kv...); err != nil {
		return Result{}, err
	}
	act, err := c.s.Mail(t.From, nil)
	if r, done, err := c.final("mail", act, err); done {
		return r, err
	}

	for _, rcpt := range t.Rcpts {
		if err := c.s.Macros(gomilter.CodeRcpt, "i", t.QueueID, "{rcpt_addr}", rcpt); err != nil {
			return Result{}, err
		}
		act, err := c.s.Rcpt(rcpt, nil)
		if r, done, err := c.final("rcpt", act, err); done {
			return r, err
		}
	}

	if err := c.s.Macros(gomilter.CodeEOH, "i", t.QueueID); err != nil {
		return Result{}, err
	}
	act, err = c.s.HeaderEnd()
	if r, done, err := c.final("eoh", act, err); done {
		return r, err
	}

	if err := c.s.Macros(gomilter.CodeEOB, "i", t.QueueID); err != nil {
		return Result{}, err
	}
	mods, act, err := c.s.End()
	if err != nil {
		return Result{}, err
	}
	r := result("eom", act)
	for _, m := range mods {
		if m.Code == gomilter.ActQuarantine {
			r.Quarantine = m.Reason
		}
	}
	return r, nil
}

// final reports whether act ends the transaction. A transaction that
// ends early is aborted, as the MTA does before the next one.
func (c *Conn) final(stage string, act *gomilter.Action, err error) (Result, bool, error) {
	if err != nil {
		return Result{}, true, err
	}
	if act.Code == gomilter.ActContinue {
		return Result{}, false, nil
	}
	if err := c.s.Abort(); err != nil {
		return Result{}, true, err
	}
	return result(stage, act), true, nil
}

func result(stage string, act *gomilter.Action) Result {
	return Result{Stage: stage, Action: act.Code, SMTPCode: act.SMTPCode, SMTPText: act.SMTPText}
}
