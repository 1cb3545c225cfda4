//go:build integration

package integration

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/textproto"
	"regexp"
	"strings"
	"testing"
	"time"
)

// reply is one SMTP reply: its code and its text (lines joined by "\n").
type reply struct {
	Code int
	Text string
}

func (r reply) String() string { return fmt.Sprintf("%d %s", r.Code, r.Text) }

// ok reports a 2xx reply.
func (r reply) ok() bool { return r.Code >= 200 && r.Code < 300 }

// smtpClient is a plain SMTP client that shows every reply. It is not
// net/smtp because XCLIENT needs a second EHLO, which net/smtp refuses.
type smtpClient struct {
	t    *testing.T
	conn net.Conn
	text *textproto.Conn
}

// dialOptions says how to connect.
type dialOptions struct {
	// Source is the local address to connect from, such as 127.0.0.5;
	// empty lets the kernel choose (127.0.0.1).
	Source string
}

// dialSMTP connects to addr, reads the greeting and says EHLO.
func dialSMTP(t *testing.T, addr string, opts dialOptions) *smtpClient {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if opts.Source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(opts.Source)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c := &smtpClient{t: t, conn: conn, text: textproto.NewConn(conn)}
	t.Cleanup(func() { c.conn.Close() })

	if r := c.read(); r.Code != 220 {
		t.Fatalf("greeting: %v", r)
	}
	c.ehlo()
	return c
}

// read reads one reply.
func (c *smtpClient) read() reply {
	c.t.Helper()
	c.conn.SetDeadline(time.Now().Add(60 * time.Second))
	code, text, err := c.text.ReadResponse(0)
	if err != nil && code == 0 {
		c.t.Fatalf("smtp: read reply: %v", err)
	}
	return reply{code, text}
}

// cmd sends one command line and reads its reply.
func (c *smtpClient) cmd(format string, args ...any) reply {
	c.t.Helper()
	c.conn.SetDeadline(time.Now().Add(60 * time.Second))
	if err := c.text.PrintfLine(format, args...); err != nil {
		c.t.Fatalf("smtp: send %q: %v", fmt.Sprintf(format, args...), err)
	}
	return c.read()
}

func (c *smtpClient) ehlo() {
	c.t.Helper()
	if r := c.cmd("EHLO client.test.local"); r.Code != 250 {
		c.t.Fatalf("EHLO: %v", r)
	}
}

// xclient makes Postfix take addr (an IPv4 address, or an IPv6 address
// that it sends as IPV6:addr) as the client address, then says EHLO again.
func (c *smtpClient) xclient(addr string) {
	c.t.Helper()
	if strings.Contains(addr, ":") {
		addr = "IPV6:" + addr
	}
	r := c.cmd("XCLIENT ADDR=%s NAME=[UNAVAILABLE]", addr)
	if r.Code != 220 {
		c.t.Fatalf("XCLIENT ADDR=%s: %v", addr, r)
	}
	c.ehlo()
}

// auth authenticates with AUTH PLAIN and returns the reply.
func (c *smtpClient) auth(login, password string) reply {
	c.t.Helper()
	resp := base64.StdEncoding.EncodeToString([]byte("\x00" + login + "\x00" + password))
	return c.cmd("AUTH PLAIN %s", resp)
}

// mustAuth authenticates and fails the test unless Postfix says 235.
func (c *smtpClient) mustAuth(login string) {
	c.t.Helper()
	if r := c.auth(login, saslPassword); r.Code != 235 {
		c.t.Fatalf("AUTH PLAIN %s: %v", login, r)
	}
}

// transaction is the replies to one mail transaction.
type transaction struct {
	Mail  reply
	Rcpts []reply
	Data  reply // zero when DATA was not sent
	End   reply // the reply to the final dot; zero when not reached
	// Final is the reply that decided the transaction: the first
	// refusal, or the reply to the final dot.
	Final reply
	// QueueID is the queue id from Postfix's "250 2.0.0 Ok: queued as
	// ID" or Sendmail's "250 2.0.0 ID Message accepted for delivery".
	QueueID string
}

var queuedAs = regexp.MustCompile(`queued as ([0-9A-Za-z]+)`)

// send runs one mail transaction. It sends DATA when at least one
// recipient was accepted, and RSET after a refusal, so the session can go
// on.
func (c *smtpClient) send(from string, rcpts []string, subject string) transaction {
	c.t.Helper()
	var tx transaction
	tx.Mail = c.cmd("MAIL FROM:<%s>", from)
	if !tx.Mail.ok() {
		tx.Final = tx.Mail
		c.cmd("RSET")
		return tx
	}
	var accepted int
	for _, rcpt := range rcpts {
		r := c.cmd("RCPT TO:<%s>", rcpt)
		tx.Rcpts = append(tx.Rcpts, r)
		if r.ok() {
			accepted++
		} else if tx.Final.Code == 0 {
			tx.Final = r
		}
	}
	if accepted == 0 {
		c.cmd("RSET")
		return tx
	}
	tx.Data = c.cmd("DATA")
	if tx.Data.Code != 354 {
		tx.Final = tx.Data
		c.cmd("RSET")
		return tx
	}

	msg := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n"+
		"Message-ID: <%d.%s>\r\nDate: %s\r\n\r\nauthbl-milter integration test.\r\n",
		from, strings.Join(rcpts, ">, <"), subject, time.Now().UnixNano(), from,
		time.Now().Format(time.RFC1123Z))
	c.conn.SetDeadline(time.Now().Add(60 * time.Second))
	w := c.text.DotWriter()
	if _, err := w.Write([]byte(msg)); err != nil {
		c.t.Fatalf("smtp: write message: %v", err)
	}
	if err := w.Close(); err != nil {
		c.t.Fatalf("smtp: end message: %v", err)
	}
	tx.End = c.read()
	tx.Final = tx.End
	if m := queuedAs.FindStringSubmatch(tx.End.Text); tx.End.ok() && m != nil {
		tx.QueueID = m[1]
	} else if m := sendmailAccepted.FindStringSubmatch(tx.End.Text); tx.End.ok() && m != nil {
		tx.QueueID = m[1]
	}
	if !tx.End.ok() {
		c.cmd("RSET")
	}
	return tx
}

func (c *smtpClient) quit() {
	c.t.Helper()
	c.cmd("QUIT")
	c.conn.Close()
}

// mustAccept fails the test unless the transaction ended in 250 with a
// queue id, and returns that id.
func mustAccept(t *testing.T, tx transaction) string {
	t.Helper()
	if tx.Final.Code != 250 || tx.QueueID == "" {
		t.Fatalf("want 250 ... queued as ID; got %v (transaction %+v)", tx.Final, tx)
	}
	return tx.QueueID
}

// mustRefuse fails the test unless the transaction was refused with
// code and text containing want.
func mustRefuse(t *testing.T, tx transaction, code int, want string) {
	t.Helper()
	if tx.Final.Code != code || !strings.Contains(tx.Final.Text, want) {
		t.Fatalf("want %d %s; got %v (transaction %+v)", code, want, tx.Final, tx)
	}
	if tx.QueueID != "" {
		t.Fatalf("refused, yet queued as %s", tx.QueueID)
	}
}
