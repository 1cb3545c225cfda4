//go:build integration

package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// rejectText is the [action] reject_text of every test config.
const rejectText = "5.7.1 account compromised, contact postmaster"

var (
	buildOnce sync.Once
	milterBin string
	buildErr  error
)

// buildMilter builds ./cmd/authbl-milter once per run, with the race
// detector when the tests have it.
func buildMilter(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		bin := filepath.Join(workDir, "bin", "authbl-milter")
		args := []string{"build", "-o", bin}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./cmd/authbl-milter")...)
		cmd.Dir = ".." // the module root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go %s: %w\n%s", strings.Join(cmd.Args[1:], " "), err, out)
			return
		}
		milterBin = bin
	})
	if buildErr != nil {
		t.Fatalf("cannot build the milter: %v", buildErr)
	}
	return milterBin
}

// milterOptions are the settings a test chooses; the rest of the config
// is fixed.
type milterOptions struct {
	Mode    string // reject (default), quarantine, log
	OnError string // accept (default), tempfail
	// DNS is the DNS server host:port; the test's rbldnsd by default.
	DNS string
	// Timeout is [milter] timeout, "5s" by default.
	Timeout string
	// Listen is host:port where the milter listens: where Postfix calls
	// it by default.
	Listen string
}

// milter is one authbl-milter serve process and its files.
type milter struct {
	config string
	db     string
	log    logFile
	proc   *process
}

// configTOML is the test config; its keys are in config.toml.example.
const configTOML = `# written by the authbl-milter integration tests
[milter]
listen = "inet:%s"
on_error = %q
timeout = %q

[action]
mode = %q
reject_text = %q

[dns]
servers = [%q]
timeout = "1s"

[[list]]
name = "test-authbl"
kind = "ip"
zone = "` + ipZone + `"
match = ["` + listedCode + `"]
test_point = "127.0.0.2"
test_expect = "` + listedCode + `"

[[list]]
name = "test-authbl-rcpt"
kind = "recipient"
zone = "` + rcptZone + `"

[accounts]
backend = "sqlite"
path = %q

[log]
level = "debug"
format = "json"
`

// writeMilterConfig writes a config for the test into dir and returns its
// path.
func writeMilterConfig(t *testing.T, dir string, dns *rbldnsd, opts milterOptions) (path, db string) {
	t.Helper()
	if opts.Mode == "" {
		opts.Mode = "reject"
	}
	if opts.OnError == "" {
		opts.OnError = "accept"
	}
	if opts.DNS == "" {
		opts.DNS = dns.addr
	}
	if opts.Timeout == "" {
		opts.Timeout = "5s"
	}
	if opts.Listen == "" {
		opts.Listen = mta.milterAddr
	}
	db = filepath.Join(dir, "accounts.db")
	text := fmt.Sprintf(configTOML, opts.Listen, opts.OnError, opts.Timeout,
		opts.Mode, rejectText, opts.DNS, db)
	path = filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, db
}

// startMilter starts `authbl-milter serve` on the address Postfix calls
// (or opts.Listen), waits until it listens, and stops it at the end of
// the test. A test that starts a second one must stop the first.
func startMilter(t *testing.T, dns *rbldnsd, opts milterOptions) *milter {
	t.Helper()
	if opts.Listen == "" {
		opts.Listen = mta.milterAddr
	}
	bin := buildMilter(t)
	dir := testDir(t, fmt.Sprintf("milter-%d", time.Now().UnixNano()))
	cfg, db := writeMilterConfig(t, dir, dns, opts)

	m := &milter{config: cfg, db: db, log: logFile{filepath.Join(dir, "milter.log")}}
	var err error
	m.proc, err = startProcess("authbl-milter", m.log.path, bin, "serve", "-config", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.stop(t) })

	if err := waitTCP(opts.Listen, 20*time.Second, m.proc.exited); err != nil {
		t.Fatalf("authbl-milter: %v; its output:\n%s", err, m.proc.output())
	}
	return m
}

// stop stops the milter (SIGTERM) and fails the test if it reported a
// data race or a panic, or did not stop in time.
func (m *milter) stop(t *testing.T) {
	t.Helper()
	m.proc.stop(15 * time.Second)
	out := m.proc.output()
	for _, bad := range []string{"WARNING: DATA RACE", "panic:", "fatal error:"} {
		if strings.Contains(out, bad) {
			t.Errorf("authbl-milter output has %q:\n%s", bad, out)
			break
		}
	}
}

// cli runs an authbl-milter subcommand with this milter's config; the
// -config flag goes last, as the README writes it.
func (m *milter) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	args = append(args, "-config", m.config)
	out, err := exec.Command(milterBin, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("authbl-milter %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// logEntry is one JSON line of the milter's log.
type logEntry map[string]any

func (e logEntry) str(key string) string {
	v, ok := e[key]
	if !ok {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

func (e logEntry) String() string {
	b, _ := json.Marshal(map[string]any(e))
	return string(b)
}

// entries returns the milter's JSON log lines after mark; other lines
// (such as a race report) are skipped here and caught by stop.
func (m *milter) entries(mark int64) []logEntry {
	var out []logEntry
	for _, line := range m.log.linesSince(mark) {
		var e logEntry
		if json.Unmarshal([]byte(line), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

// match reports whether e has every field of want (values compared as
// strings).
func (e logEntry) match(want map[string]string) bool {
	for k, v := range want {
		if e.str(k) != v {
			return false
		}
	}
	return true
}

// find returns the entries after mark that have every field of want.
func (m *milter) find(mark int64, want map[string]string) []logEntry {
	var found []logEntry
	for _, e := range m.entries(mark) {
		if e.match(want) {
			found = append(found, e)
		}
	}
	return found
}

// waitEntry waits for an entry after mark with every field of want.
func (m *milter) waitEntry(t *testing.T, mark int64, want map[string]string) logEntry {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if found := m.find(mark, want); len(found) > 0 {
			return found[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("the milter logged no line with %v; its log since the mark:\n%s",
				want, strings.Join(m.log.linesSince(mark), "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// detection waits for the account_compromised event of account and
// checks its fields against want.
func (m *milter) detection(t *testing.T, mark int64, account string, want map[string]string) logEntry {
	t.Helper()
	e := m.waitEntry(t, mark, map[string]string{"event": "account_compromised", "account": account})
	for k, v := range want {
		if got := e.str(k); got != v {
			t.Errorf("detection event: %s = %q, want %q; event: %v", k, got, v, e)
		}
	}
	return e
}

// noDetection fails the test if the milter logged a detection after mark.
func (m *milter) noDetection(t *testing.T, mark int64) {
	t.Helper()
	if found := m.find(mark, map[string]string{"event": "account_compromised"}); len(found) > 0 {
		t.Errorf("unexpected detection: %v", found)
	}
}
