package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/authbl-milter/authbl-milter/milter/mtasim"
)

// serving is a serve command running in this process.
type serving struct {
	t       *testing.T
	cfg     string
	addr    string
	http    string
	done    chan int
	stderr  *syncBuffer
	stopped bool
	code    int // the exit code, once stopped
}

func startServe(t *testing.T, cfg string) *serving {
	t.Helper()
	s := &serving{t: t, cfg: cfg, addr: freePort(t), http: freePort(t),
		done: make(chan int, 1), stderr: &syncBuffer{}}
	editConfig(t, cfg, "[milter]\n", fmt.Sprintf("[milter]\nlisten = \"inet:%s\"\n", s.addr))
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n[http]\nlisten = %q\n", s.http)
	f.Close()
	go func() { s.done <- run([]string{"serve", "-config", cfg}, io.Discard, s.stderr) }()
	waitListening(t, s.addr, s.done)
	t.Cleanup(s.stop)
	return s
}

func (s *serving) stop() {
	if s.stopped {
		return
	}
	s.stopped = true
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case s.code = <-s.done:
	case <-time.After(20 * time.Second):
		s.code = -1
		s.t.Error("serve did not stop on SIGTERM")
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (s *serving) send(login, client string, rcpts ...string) mtasim.Result {
	s.t.Helper()
	c, err := mtasim.Dial("tcp", s.addr, mtasim.Options{ClientAddr: client, Helo: "c.example"})
	if err != nil {
		s.t.Fatal(err)
	}
	defer c.Close()
	res, err := c.Send(mtasim.Transaction{Login: login, AuthType: "PLAIN", ClientAddr: client,
		From: "s@example.com", Rcpts: rcpts, QueueID: "Q1"})
	if err != nil {
		s.t.Fatal(err)
	}
	return res
}

// waitLog waits for a log line containing every part.
func (s *serving) waitLog(parts ...string) string {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range s.stderr.lines() {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(l, p)
			}
			if all {
				return l
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("no log line with %q; log:\n%s", parts, strings.Join(s.stderr.lines(), "\n"))
	return ""
}

func (s *serving) hup() {
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
}

func TestServeMetricsAndHealth(t *testing.T) {
	cfg, _ := testConfig(t, "")
	s := startServe(t, cfg)
	base := "http://" + s.http

	if code, _ := httpGet(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	if code, body := httpGet(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz %d %s", code, body)
	}
	if res := s.send("m@example.com", "192.0.2.66", "x@example.org"); !res.Rejected() {
		t.Fatalf("listed client: %q", res)
	}
	s.send("ok@example.com", "198.51.100.1", "x@example.org")

	_, body := httpGet(t, base+"/metrics")
	for _, want := range []string{
		`authbl_milter_transactions_total{outcome="reject"} 1`,
		`authbl_milter_transactions_total{outcome="accept"} 1`,
		`authbl_milter_lookups_total{list="authbl",result="listed"} 1`,
		`authbl_milter_lookups_total{list="authbl-rcpt",result="clean"} 2`,
		`authbl_milter_detections_total{new="true",reason="ip"} 1`,
		`authbl_milter_actions_total{action="reject"} 1`,
		`authbl_milter_list_healthy{list="authbl",state="ok"} 1`,
		`authbl_milter_cache_misses_total `,
		`authbl_milter_store_errors_total 0`,
		`authbl_milter_pending_detections 0`,
		`authbl_milter_lookup_duration_seconds_count{list="authbl"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestServeReload(t *testing.T) {
	cfg, _ := testConfig(t, "")
	s := startServe(t, cfg)
	if res := s.send("a@example.com", "192.0.2.66", "x@example.org"); !res.Rejected() {
		t.Fatalf("before reload: %q", res)
	}

	// A broken file is refused; the running configuration stays.
	good, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, append(append([]byte{}, good...), "\n[action]\nmode = \"explode\"\n"...), 0o600)
	s.hup()
	s.waitLog("reload refused", "action.mode")
	if res := s.send("b@example.com", "192.0.2.66", "x@example.org"); !res.Rejected() {
		t.Fatalf("after a refused reload: %q", res)
	}

	// A good one takes effect: log mode now, and a listen change is only
	// reported.
	changed := strings.Replace(string(good), "[milter]\n", "[milter]\nlisten = \"inet:127.0.0.1:1\"\n", 1)
	changed = strings.Replace(changed, "listen = \"inet:"+s.addr+"\"\n", "", 1)
	changed += "\n[action]\nmode = \"log\"\n[log]\nlevel = \"debug\"\n"
	os.WriteFile(cfg, []byte(changed), 0o600)
	s.hup()
	s.waitLog("changed setting needs a restart", `"key":"milter.listen"`)
	s.waitLog("configuration reloaded")
	if res := s.send("c@example.com", "192.0.2.66", "x@example.org"); !res.Accepted() {
		t.Fatalf("log mode after reload: %q", res)
	}
	s.waitLog(`"account":"c@example.com"`, `"action":"log"`)
	s.waitLog(`"level":"debug"`, `"msg":"lookup"`)
}

func TestServeAnswersTransactionInFlightOnSIGTERM(t *testing.T) {
	cfg, z := testConfig(t, "")
	s := startServe(t, cfg)
	z.SetDelay(400 * time.Millisecond)

	answer := make(chan mtasim.Result, 1)
	go func() { answer <- s.send("late@example.com", "192.0.2.66", "x@example.org") }()
	time.Sleep(150 * time.Millisecond) // its lookups are under way
	s.stop()
	select {
	case res := <-answer:
		if !res.Rejected() {
			t.Fatalf("in-flight transaction got %q", res)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no answer")
	}
	if s.code != exitOK {
		t.Fatalf("exit %d", s.code)
	}
	s.waitLog("shutting down")
	s.waitLog("stopped")
}

// TestServeAccountsCommandCountsWhenItReturns: serve answers from its
// memory of the account store, and the accounts command, another user of
// the same SQLite file, returns only once the running milter has seen its
// change: a release and a manual flag count for the very next transaction.
func TestServeAccountsCommandCountsWhenItReturns(t *testing.T) {
	cfg, _ := testConfig(t, "")
	s := startServe(t, cfg)
	for range 3 { // known flagged, then answered from memory
		if res := s.send("mallory@example.com", "192.0.2.66", "a@example.org"); !res.Rejected() {
			t.Fatalf("listed client: %v, want a reject", res)
		}
	}
	for range 3 { // known not flagged, then answered from memory
		if res := s.send("trent@example.com", "198.51.100.1", "a@example.org"); !res.Accepted() {
			t.Fatalf("clean transaction: %v, want accept", res)
		}
	}

	if code, out, errOut := cli(t, "accounts", "release", "mallory@example.com", "-config", cfg); code != 0 {
		t.Fatalf("release: exit %d: %s%s", code, out, errOut)
	}
	if res := s.send("mallory@example.com", "198.51.100.2", "a@example.org"); !res.Accepted() {
		t.Fatalf("right after the release: %v, want accept", res)
	}
	if code, out, errOut := cli(t, "accounts", "flag", "trent@example.com", "-config", cfg); code != 0 {
		t.Fatalf("flag: exit %d: %s%s", code, out, errOut)
	}
	if res := s.send("trent@example.com", "198.51.100.1", "a@example.org"); !res.Rejected() {
		t.Fatalf("right after the manual flag: %v, want a reject", res)
	}
}
