package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/action/redistest"
	"github.com/authbl-milter/authbl-milter/milter/mtasim"
)

// redisConfig is testConfig with the accounts in Redis at url, and extra
// [accounts] keys.
func redisConfig(t *testing.T, url, accounts, extra string) string {
	t.Helper()
	path, _ := testConfig(t, extra)
	editConfig(t, path, "[accounts]\n",
		fmt.Sprintf("[accounts]\nbackend = \"redis\"\nredis_url = %q\n%s\n", url, accounts))
	return path
}

// TestAccountsCommandsRedis runs the accounts subcommands against Redis,
// and checks that two prefixes on one server are two separate sites.
func TestAccountsCommandsRedis(t *testing.T) {
	srv := redistest.Start(t)
	siteA := redisConfig(t, srv.URL(), `redis_prefix = "site-a:"`, "")
	siteB := redisConfig(t, srv.URL(), `redis_prefix = "site-b:"`, "")
	steps := []struct {
		cfg  string
		args []string
		code int
		want string
	}{
		{siteA, []string{"accounts", "list"}, 0, ""},
		{siteA, []string{"accounts", "flag", "Bob@Example.com"}, 0, "flagged bob@example.com"},
		{siteA, []string{"accounts", "flag", "bob@example.com"}, 0, "already flagged"},
		{siteA, []string{"accounts", "list"}, 0, "bob@example.com"},
		{siteB, []string{"accounts", "list"}, 0, ""},
		{siteB, []string{"accounts", "show", "bob@example.com"}, 1, ""},
		{siteA, []string{"accounts", "show", "BOB@example.com"}, 0, "hits:       2"},
		{siteA, []string{"accounts", "release", "bob@example.com"}, 0, "released bob@example.com"},
		{siteA, []string{"accounts", "release", "bob@example.com"}, 1, ""},
		{siteA, []string{"accounts", "list"}, 0, ""},
	}
	for _, s := range steps {
		code, out, errOut := cli(t, append(s.args, "-config", s.cfg)...)
		if code != s.code || !strings.Contains(out, s.want) {
			t.Fatalf("%v: exit %d, output %q %q; want exit %d with %q",
				s.args, code, out, errOut, s.code, s.want)
		}
		if s.args[1] == "list" && s.want == "" && out != "" {
			t.Fatalf("%v: list of an empty store printed %q", s.args, out)
		}
	}

	srv.Stop()
	code, _, errOut := cli(t, "accounts", "list", "-config", siteA)
	if code != exitFail || !strings.Contains(errOut, "redis store: list") {
		t.Fatalf("list with Redis down: exit %d, %q; want 1 with the error", code, errOut)
	}
}

// TestServeRedisAndNotifications runs serve as the daemon would, with
// Redis as the store, a report command and a webhook: a detection is
// rejected, flagged in Redis, reported and posted; SIGTERM stops it.
func TestServeRedisAndNotifications(t *testing.T) {
	srv := redistest.Start(t)
	bodies := make(chan []byte, 10)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- b
	}))
	t.Cleanup(hook.Close)
	reports := filepath.Join(t.TempDir(), "reports.log")
	script, err := filepath.Abs("../../examples/report.sh")
	if err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	cfg := redisConfig(t, srv.URL(), `redis_prefix = "serve:"`, fmt.Sprintf(`
[notify]
command = [%q, %q]
webhook = [%q]
webhook_secret = "s3cret"
timeout = "5s"
`, script, reports, hook.URL))
	editConfig(t, cfg, "[milter]\n", fmt.Sprintf("[milter]\nlisten = \"inet:%s\"\n", addr))

	done := make(chan int, 1)
	stderr := &syncBuffer{}
	go func() { done <- run([]string{"serve", "-config", cfg}, io.Discard, stderr) }()
	waitListening(t, addr, done)

	c, err := mtasim.Dial("tcp", addr, mtasim.Options{ClientAddr: "192.0.2.66",
		ClientName: "client.example", Helo: "client.example"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Send(mtasim.Transaction{Login: "Mallory@example.com", AuthType: "PLAIN",
		ClientAddr: "192.0.2.66", From: "<mallory@example.com>",
		Rcpts: []string{"friend@example.org"}, QueueID: "4ABC123"})
	c.Close()
	if err != nil || !res.Rejected() {
		t.Fatalf("listed mail: %q, %v; want a rejection", res, err)
	}

	store, err := action.OpenRedis(srv.URL(), action.RedisOptions{Prefix: "serve:"})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if f, err := store.Get(context.Background(), "mallory@example.com"); err != nil ||
		f.ClientIP != "192.0.2.66" {
		t.Fatalf("flag in Redis: %+v, %v", f, err)
	}

	select {
	case b := <-bodies:
		var doc map[string]any
		if err := json.Unmarshal(b, &doc); err != nil || doc["account"] != "mallory@example.com" ||
			doc["action"] != "reject" {
			t.Errorf("webhook body %s (%v)", b, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no webhook post")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(reports)
		if strings.Contains(string(data), "account=mallory@example.com ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no report line; log:\n%s", strings.Join(stderr.lines(), "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}

	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("serve exited %d:\n%s", code, strings.Join(stderr.lines(), "\n"))
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop on SIGTERM")
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitListening waits until serve accepts connections on addr, failing
// if it exits first.
func waitListening(t *testing.T, addr string, done chan int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case code := <-done:
			t.Fatalf("serve exited %d before listening", code)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("serve does not listen")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// editConfig replaces the first old in the file at path with new.
func editConfig(t *testing.T, path, old, new string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("%q is not in the config", old)
	}
	s := strings.Replace(string(data), old, new, 1)
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}
