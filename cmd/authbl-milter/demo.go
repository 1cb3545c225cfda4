package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/config"
	"github.com/authbl-milter/authbl-milter/lookup/zoneserver"
	"github.com/authbl-milter/authbl-milter/milter"
	"github.com/authbl-milter/authbl-milter/milter/mtasim"
)

// The demo's sample lists, served from memory on a loopback UDP port.
const (
	demoIPZone   = "authbl.demo.test"
	demoRcptZone = "authbl-rcpt.demo.test"
	demoListedIP = "192.0.2.66"
	demoErrorIP  = "198.51.100.254" // the list answers an error code for it
	demoDropbox  = "drop.box@example.net"
)

// demoStep is one transaction of the demo.
type demoStep struct {
	what string
	tx   mtasim.Transaction
}

var demoSteps = []demoStep{
	{"clean account, clean recipient", mtasim.Transaction{
		Login: "alice@example.com", ClientAddr: "198.51.100.10",
		Rcpts: []string{"bob@example.org"}}},
	{"login from a listed IP", mtasim.Transaction{
		Login: "carol@example.com", ClientAddr: demoListedIP,
		Rcpts: []string{"friend@example.org"}}},
	{"dropbox among the recipients", mtasim.Transaction{
		Login: "dave@example.com", ClientAddr: "198.51.100.11",
		Rcpts: []string{"team@example.org", "Drop.Box@Example.NET"}}},
	{"flagged account, new IP, clean rcpt", mtasim.Transaction{
		Login: "dave@example.com", ClientAddr: "198.51.100.12",
		Rcpts: []string{"mum@example.org"}}},
	{"list answers an error code", mtasim.Transaction{
		Login: "erin@example.com", ClientAddr: demoErrorIP,
		Rcpts: []string{"boss@example.org"}}},
	{"not authenticated (no lookups)", mtasim.Transaction{
		ClientAddr: demoListedIP, Rcpts: []string{demoDropbox}}},
}

// runDemo serves a sample zone and the milter on loopback, drives a few
// transactions through the milter protocol and prints what each got.
func runDemo(stdout, stderr io.Writer) int {
	if err := demo(stdout); err != nil {
		fmt.Fprintf(stderr, "authbl-milter demo: %v\n", err)
		return exitFail
	}
	return exitOK
}

func demo(out io.Writer) error {
	zones, err := demoZones()
	if err != nil {
		return err
	}
	defer zones.Close()

	dir, err := os.MkdirTemp("", "authbl-milter-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg := demoConfig(zones.Addr(), filepath.Join(dir, "accounts.db"))
	if err := cfg.Validate(); err != nil {
		return err
	}

	var logBuf syncBuffer
	log, _, err := newLogger(cfg.Log, &logBuf)
	if err != nil {
		return err
	}
	checker, err := newChecker(cfg, log)
	if err != nil {
		return err
	}
	store, err := openStore(cfg, forDaemon)
	if err != nil {
		return err
	}
	defer store.Close()
	accounts := action.NewAccounts(store, action.AccountsOptions{Log: log})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := milter.NewServer(milterOptions(cfg, checker, accounts, log))
	go srv.Serve(ln)
	defer srv.Close()

	fmt.Fprintf(out, "authbl-milter demo: sample lists on udp://%s, milter on inet:%s\n",
		zones.Addr(), ln.Addr())
	fmt.Fprintf(out, "  %s lists %s (127.0.0.4) and answers %s with the error code 127.255.255.254\n",
		demoIPZone, demoListedIP, demoErrorIP)
	fmt.Fprintf(out, "  %s lists the dropbox %s\n\n", demoRcptZone, demoDropbox)

	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tscenario\tlogin\tclient\trecipients\tmilter answer\tDNS queries")
	for i, step := range demoSteps {
		before := len(zones.Queries())
		res, err := demoSend(ln.Addr().String(), step.tx, i)
		if err != nil {
			return fmt.Errorf("step %d: %w", i+1, err)
		}
		login := step.tx.Login
		if login == "" {
			login = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\n", i+1, step.what, login,
			step.tx.ClientAddr, strings.Join(step.tx.Rcpts, ","), shortAnswer(res),
			len(zones.Queries())-before)
	}
	tw.Flush()
	fmt.Fprintf(out, "\nrejections read: 550 %s\n", cfg.Action.RejectText)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	fmt.Fprintln(out, "\nauthbl-milter accounts list (account, reason, list, client IP,"+
		" recipient, flagged at, hits):")
	var listErr bytes.Buffer
	if accountsList(ctx, &env{stdout: out, stderr: &listErr}, store) != exitOK {
		return fmt.Errorf("accounts list: %s", strings.TrimSpace(listErr.String()))
	}

	log.Sync()
	fmt.Fprintln(out, "\ndetections and warnings from the milter's JSON log:")
	for _, line := range logBuf.lines() {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		if m["event"] == "account_compromised" || m["level"] == "warn" {
			fmt.Fprintln(out, "  "+line)
		}
	}
	return nil
}

// shortAnswer keeps the codes of a reply: the full text is printed once.
func shortAnswer(r mtasim.Result) string {
	if r.SMTPCode == 0 {
		return r.String()
	}
	code, _, _ := strings.Cut(r.SMTPText, " ")
	return fmt.Sprintf("%d %s (reject)", r.SMTPCode, code)
}

// demoSend sends one transaction on its own milter connection.
func demoSend(addr string, tx mtasim.Transaction, i int) (mtasim.Result, error) {
	c, err := mtasim.Dial("tcp", addr, mtasim.Options{ClientAddr: tx.ClientAddr,
		ClientName: "client.example", Helo: "client.example", Timeout: 10 * time.Second})
	if err != nil {
		return mtasim.Result{}, err
	}
	defer c.Close()
	if tx.Login != "" {
		tx.AuthType = "PLAIN"
	}
	tx.From = "sender@example.com"
	tx.QueueID = fmt.Sprintf("DEMO%04d", i+1)
	return c.Send(tx)
}

func demoZones() (*zoneserver.Server, error) {
	z := zoneserver.New()
	for _, err := range []error{
		z.AddIP(demoIPZone, "127.0.0.2", "127.0.0.4"), // the test point
		z.AddIP(demoIPZone, demoListedIP, "127.0.0.4"),
		z.AddIP(demoIPZone, demoErrorIP, "127.255.255.254"),
		z.AddRecipient(demoRcptZone, demoDropbox, "127.0.0.2"),
	} {
		if err != nil {
			return nil, err
		}
	}
	if err := z.Start("127.0.0.1:0"); err != nil {
		return nil, err
	}
	return z, nil
}

func demoConfig(dnsAddr, dbPath string) *config.Config {
	cfg := config.Default()
	cfg.Milter.Timeout.Duration = 2 * time.Second
	cfg.DNS.Servers = []string{dnsAddr}
	cfg.DNS.Timeout.Duration = time.Second
	cfg.Accounts.Path = dbPath
	cfg.Lists = []config.List{
		{Name: "demo-authbl", Kind: "ip", Zone: demoIPZone, Match: []string{"127.0.0.4"},
			TestPoint: "127.0.0.2", TestExpect: "127.0.0.4"},
		{Name: "demo-authbl-rcpt", Kind: "recipient", Zone: demoRcptZone},
	}
	return &cfg
}

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}
