package notify

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/milter"
)

// hostile are SMTP facts an attacker would try; dir is where a successful
// injection would leave a file.
func hostile(dir string) []string {
	return []string{
		"$(touch " + dir + "/subst)@example.com",
		"`touch " + dir + "/backquote`@example.com",
		"x@example.com; touch " + dir + "/semicolon",
		"x@example.com\ntouch " + dir + "/newline",
		"x@example.com\r\nAUTHBL_ACCOUNT=forged",
		"'\"; touch " + dir + "/quote; #@example.com",
		"() { :; }; touch " + dir + "/shellshock",
		"-n\\c*@example.com",
	}
}

func hostileEvent(dir string) Event {
	rcpts := hostile(dir)
	return Event{
		Account:    "$(touch " + dir + "/account)",
		ClientIP:   "192.0.2.66",
		ClientName: "`touch " + dir + "/name`",
		Helo:       "helo\x00\x1b[31m;touch " + dir + "/helo",
		Sender:     "a@b\u2028touch " + dir + "/sender",
		AuthType:   "PLAIN",
		Reason:     action.ReasonRecipient,
		List:       "authbl-rcpt",
		Recipient:  rcpts[0],
		Recipients: rcpts,
		QueueID:    "4ABC\n123",
		Action:     "reject",
		Time:       time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		Host:       "mx1.example.test",
	}.clean()
}

// noFiles fails when anything appeared in dir.
func noFiles(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("an injected command ran: %s appeared", e.Name())
	}
}

func testRunner(argv []string, timeout time.Duration) (*commandRunner, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return &commandRunner{argv: argv, path: DefaultPath, timeout: timeout,
		log: zap.New(core)}, logs
}

func TestClean(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"plain@example.com", "plain@example.com"},
		{"a\nb\rc\td\x00e\x1bf\x7fg", "abcdefg"},
		{"a\u0085b\u2028c\u2029d", "abcd"}, // C1 NEL, line and paragraph separators
		{"bad\xffutf8", "bad\uFFFDutf8"},
		{"$(x) `y` 'z' \"w\" ;|&<>", "$(x) `y` 'z' \"w\" ;|&<>"}, // not control: kept
	} {
		if got := Clean(tt.in, 100); got != tt.want {
			t.Errorf("Clean(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := Clean("ééé", 5); got != "éé" {
		t.Errorf("cut on a character boundary: %q, want %q", got, "éé")
	}
}

// TestEnviron checks the variables by name, that values arrive cleaned,
// and that nothing of the milter's own environment leaks through.
func TestEnviron(t *testing.T) {
	t.Setenv("AUTHBL_ABUSIX_API_KEY", "sekrit")
	dir := t.TempDir()
	e := hostileEvent(dir)
	r, _ := testRunner([]string{"/usr/bin/env"}, 5*time.Second)
	res := r.run(e)
	if res.Err != nil {
		t.Fatalf("env: %v (%s)", res.Err, res.Output)
	}
	got := map[string]string{}
	var names []string
	for _, line := range strings.Split(res.Output, "\n") {
		k, v, _ := strings.Cut(line, "=")
		got[k] = v
		names = append(names, k)
	}
	want := map[string]string{
		"AUTHBL_EVENT":           "account_compromised",
		"AUTHBL_ACCOUNT":         "$(touch " + dir + "/account)",
		"AUTHBL_CLIENT_IP":       "192.0.2.66",
		"AUTHBL_CLIENT_NAME":     "`touch " + dir + "/name`",
		"AUTHBL_HELO":            "helo[31m;touch " + dir + "/helo",
		"AUTHBL_SENDER":          "a@btouch " + dir + "/sender",
		"AUTHBL_SASL_METHOD":     "PLAIN",
		"AUTHBL_REASON":          "recipient",
		"AUTHBL_LIST":            "authbl-rcpt",
		"AUTHBL_RECIPIENT":       "$(touch " + dir + "/subst)@example.com",
		"AUTHBL_RECIPIENT_COUNT": "8",
		"AUTHBL_QUEUE_ID":        "4ABC123",
		"AUTHBL_ACTION":          "reject",
		"AUTHBL_TIME":            "2026-03-01T12:00:00Z",
		"AUTHBL_HOST":            "mx1.example.test",
		"sasl_username":          "$(touch " + dir + "/account)",
		"client_address":         "192.0.2.66",
		"client_name":            "`touch " + dir + "/name`",
		"helo_name":              "helo[31m;touch " + dir + "/helo",
		"sender":                 "a@btouch " + dir + "/sender",
		"recipient":              "$(touch " + dir + "/subst)@example.com",
		"sasl_method":            "PLAIN",
		"queue_id":               "4ABC123",
		"PATH":                   DefaultPath,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	rcpts := strings.Split(got["AUTHBL_RECIPIENTS"], " ")
	if !slices.Contains(rcpts, "x@example.comAUTHBL_ACCOUNT=forged") {
		t.Errorf("AUTHBL_RECIPIENTS = %q: the CRLF recipient is not there, joined",
			got["AUTHBL_RECIPIENTS"])
	}
	if len(names) != len(want)+1 { // + AUTHBL_RECIPIENTS
		t.Errorf("the command got %d variables, want %d: %q", len(names), len(want)+1, names)
	}
	if strings.Contains(res.Output, "sekrit") {
		t.Error("the milter's environment leaked into the command's")
	}
	noFiles(t, dir)
}

// TestExampleReportScript runs examples/report.sh with hostile facts:
// it must log them literally and run none of them.
func TestExampleReportScript(t *testing.T) {
	script, err := filepath.Abs("../examples/report.sh")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	logFile := filepath.Join(t.TempDir(), "reports.log")
	for i, rcpt := range hostile(dir) {
		e := hostileEvent(dir)
		e.Recipient, e.Recipients = rcpt, []string{rcpt, "other@example.org"}
		e = e.clean()
		r, logs := testRunner([]string{script, logFile}, 10*time.Second)
		res := r.runAndLog(e)
		if res.Err != nil || res.ExitCode != 0 {
			t.Fatalf("report.sh: %v, exit %d: %s", res.Err, res.ExitCode, res.Output)
		}
		if res.Output != "reported "+e.Account {
			t.Errorf("output %q", res.Output)
		}
		if logs.FilterMessage("report command done").Len() != 1 {
			t.Errorf("case %d: no \"report command done\" log line", i)
		}
		data, err := os.ReadFile(logFile)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		if len(lines) != i+1 {
			t.Fatalf("case %d: the log has %d lines, want %d: one per run", i, len(lines), i+1)
		}
		if !strings.Contains(lines[i], "recipient="+e.Recipient+" recipients=2 ") {
			t.Errorf("case %d: line %q does not hold the recipient %q literally",
				i, lines[i], e.Recipient)
		}
	}
	noFiles(t, dir)
}

func TestCommandExitStatusAndOutputLogged(t *testing.T) {
	r, logs := testRunner([]string{"/bin/sh", "-c", "echo oops; echo more >&2; exit 3"},
		5*time.Second)
	res := r.runAndLog(Event{Account: "a@example.com"})
	if res.ExitCode != 3 || res.Err == nil || res.TimedOut {
		t.Fatalf("result %+v, want exit 3", res)
	}
	entries := logs.FilterMessage("report command failed").All()
	if len(entries) != 1 {
		t.Fatalf("%d \"report command failed\" lines", len(entries))
	}
	f := entries[0].ContextMap()
	if f["exit_status"] != int64(3) || f["output"] != "oops\nmore" || f["account"] != "a@example.com" {
		t.Errorf("log fields %v", f)
	}

	r, _ = testRunner([]string{"/nonexistent/report"}, 5*time.Second)
	if res := r.run(Event{}); res.Err == nil || res.ExitCode != -1 {
		t.Errorf("a missing program: %+v, want a failure to start", res)
	}
}

func TestCommandOutputCapped(t *testing.T) {
	r, _ := testRunner([]string{"/bin/sh", "-c", "yes x | head -c 100000"}, 5*time.Second)
	res := r.run(Event{})
	if res.Err != nil || len(res.Output) > maxOutput+10 || !strings.HasSuffix(res.Output, "[...]") {
		t.Fatalf("output of %d bytes, err %v: want it cut at %d", len(res.Output), res.Err, maxOutput)
	}
}

// TestCommandTimeoutKillsProcessGroup checks that at the timeout the
// command and what it started are killed.
func TestCommandTimeoutKillsProcessGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child.pid")
	r, logs := testRunner([]string{"/bin/sh", "-c",
		`sleep 60 & echo $! >"$0"; wait`, pidFile}, 300*time.Millisecond)
	start := time.Now()
	res := r.runAndLog(Event{})
	if !res.TimedOut || res.Err == nil {
		t.Fatalf("result %+v, want a timeout", res)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v with a timeout of 300ms", d)
	}
	if logs.FilterMessage("report command timed out; its process group was killed").Len() != 1 {
		t.Error("the timeout was not logged")
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("the command's child %d survived the timeout", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// processAlive reports whether pid runs (a zombie does not count).
func processAlive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] != 'Z'
}

// TestCommandConcurrencyBounded runs more events than MaxCommands and
// checks, by files that each run creates and removes, that no more than
// MaxCommands ran at once, and that every event got its run.
func TestCommandConcurrencyBounded(t *testing.T) {
	dir := t.TempDir()
	runs := filepath.Join(t.TempDir(), "runs")
	script := `touch "$0/run.$$"; ls "$0" | wc -l >>"$1"; sleep 0.2; rm "$0/run.$$"`
	n := New(Options{Command: []string{"/bin/sh", "-c", script, dir, runs},
		MaxCommands: 2, Timeout: 10 * time.Second})
	stop := runNotifier(t, n)
	for i := range 6 {
		n.Notify(Event{Account: "user" + strconv.Itoa(i) + "@example.com"})
	}
	waitFor(t, "6 commands run", func() bool { return n.Stats().CommandsRun == 6 })
	stop()

	data, err := os.ReadFile(runs)
	if err != nil {
		t.Fatal(err)
	}
	counts := strings.Fields(string(data))
	if len(counts) != 6 {
		t.Fatalf("%d runs recorded, want 6", len(counts))
	}
	for _, c := range counts {
		if k, _ := strconv.Atoi(c); k < 1 || k > 2 {
			t.Errorf("%s commands ran at once, want at most 2", c)
		}
	}
}

func TestCommandQueueFullDrops(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	n := New(Options{Command: []string{"/bin/true"}, Queue: 1, Log: zap.New(core)})
	// Run is not started: the first event waits, the others find the
	// queue full.
	for range 3 {
		n.Notify(Event{Account: "a@example.com"})
	}
	if s := n.Stats(); s.Events != 3 || s.CommandsDropped != 2 {
		t.Fatalf("stats %+v, want 3 events, 2 dropped", s)
	}
	if logs.FilterMessage("report command not run: too many waiting").Len() != 2 {
		t.Error("the drops were not logged")
	}
	stop := runNotifier(t, n)
	waitFor(t, "the queued command run", func() bool { return n.Stats().CommandsRun == 1 })
	stop()
}

// TestOnlyNewDetectionsNotify calls OnDetection with a repeat detection
// and a flagged account's mail: neither is notified.
func TestOnlyNewDetectionsNotifyUnit(t *testing.T) {
	n := New(Options{Command: []string{"/bin/true"}})
	n.OnDetection(milter.Detection{Account: "a@example.com", New: false})
	n.OnDetection(milter.Detection{Account: "a@example.com", New: false,
		Verdict: action.Verdict{Compromised: true, Reason: action.ReasonFlagged}})
	if s := n.Stats(); s.Events != 0 || len(n.queue) != 0 {
		t.Fatalf("stats %+v, queue %d: a detection that was not new was notified", s, len(n.queue))
	}
	n.OnDetection(milter.Detection{Account: "a@example.com", New: true})
	if s := n.Stats(); s.Events != 1 || len(n.queue) != 1 {
		t.Fatalf("stats %+v, queue %d: want the new detection queued", s, len(n.queue))
	}
}

// runNotifier runs n until the returned stop is called or the test ends.
func runNotifier(t *testing.T, n *Notifier) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		n.Run(ctx)
		close(done)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it holds, failing after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
