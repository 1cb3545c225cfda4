//go:build integration

package integration

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The shared state of one test run: the environment check, the work
// folder and the Postfix instance, all made once in TestMain.
var (
	// skipReason says what the machine lacks; empty when it has all.
	skipReason string
	// setupErr is a failure to start what the machine does have: the
	// tests fail on it, they never skip.
	setupErr error
	// workDir holds everything the run makes; mode 0755 so that the
	// postfix and rbldns users can reach their files.
	workDir string
	// mta is the shared Postfix instance.
	mta *postfix

	// sendmailSkip says what Sendmail lacks (see sendmailMissing);
	// sendmailErr is a failure to start it. The Postfix tests do not
	// depend on either.
	sendmailSkip string
	sendmailErr  error
	// smta is the shared Sendmail instance.
	smta *sendmail
)

// tools are the programs the tests run, each with the package that
// brings it.
var tools = []struct{ name, pkg string }{
	{"postfix", "postfix"},
	{"postconf", "postfix"},
	{"postqueue", "postfix"},
	{"postsuper", "postfix"},
	{"saslpasswd2", "sasl2-bin"},
	{"rbldnsd", "rbldnsd"},
}

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	skipReason, sendmailSkip = checkEnv()
	if skipReason == "" {
		setupErr = setUp()
		if sendmailSkip == "" {
			sendmailErr = setUpSendmail()
		}
	}
	code := m.Run()
	tearDown()
	return code
}

// checkEnv returns what the machine lacks for the tests, or "": for all
// of them, and for the Sendmail ones in addition. As root it first runs
// setup.sh to install missing packages.
func checkEnv() (all, sendmail string) {
	if os.Geteuid() != 0 {
		return "not root: a private Postfix instance must be started as root",
			"not root: a private Sendmail instance must be started as root"
	}
	missing, smMissing := missingPackages(), sendmailMissing()
	if len(missing)+len(smMissing) == 0 {
		return "", ""
	}
	var setupFailed error
	if os.Getenv("AUTHBL_IT_NO_SETUP") == "" {
		out, err := exec.Command("bash", "setup.sh").CombinedOutput()
		os.Stderr.Write(out)
		setupFailed = err
		missing, smMissing = missingPackages(), sendmailMissing()
	}
	return missingReason(missing, setupFailed), missingReason(smMissing, setupFailed)
}

func missingReason(missing []string, setupFailed error) string {
	switch {
	case len(missing) == 0:
		return ""
	case setupFailed != nil:
		return fmt.Sprintf("missing %s, and setup.sh failed: %v",
			strings.Join(missing, ", "), setupFailed)
	default:
		return "missing " + strings.Join(missing, ", ") +
			" (run integration/setup.sh as root)"
	}
}

// missingPackages names what is absent: programs with their packages,
// the sasldb plugin, the system users.
func missingPackages() []string {
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool.name); err != nil {
			missing = append(missing, fmt.Sprintf("%s (package %s)", tool.name, tool.pkg))
		}
	}
	plugins, _ := filepath.Glob("/usr/lib/*/sasl2/libsasldb.so*")
	if len(plugins) == 0 {
		missing = append(missing, "Cyrus sasldb plugin (package libsasl2-modules-db)")
	}
	for _, user := range []string{"postfix", "rbldns"} {
		if _, err := lookupUser(user); err != nil {
			missing = append(missing, "system user "+user)
		}
	}
	return missing
}

// setUp makes the work folder and starts Postfix.
func setUp() error {
	dir, err := os.MkdirTemp("", "authbl-it-")
	if err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	workDir = dir
	if os.Getenv("AUTHBL_IT_KEEP") != "" {
		fmt.Fprintf(os.Stderr, "integration: work folder %s is kept\n", dir)
	}

	mta, err = startPostfix(filepath.Join(dir, "postfix"))
	return err
}

// setUpSendmail starts the shared Sendmail instance.
func setUpSendmail() error {
	if workDir == "" {
		return fmt.Errorf("no work folder: %v", setupErr)
	}
	var err error
	smta, err = startSendmail(filepath.Join(workDir, "sendmail"), sendmailOptions{})
	return err
}

func tearDown() {
	if mta != nil {
		mta.stop()
	}
	if smta != nil {
		smta.stop()
	}
	if workDir == "" || os.Getenv("AUTHBL_IT_KEEP") != "" {
		return
	}
	// A daemon's last writes may still land while the tree goes.
	var err error
	for range 20 {
		if err = os.RemoveAll(workDir); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "integration: cannot remove %s: %v\n", workDir, err)
}

// needEnv skips the test when the machine lacks something (or fails it
// under CI=true), and fails it when the shared set-up failed.
func needEnv(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true, and the integration environment is incomplete: %s", skipReason)
		}
		t.Skip(skipReason)
	}
	if setupErr != nil {
		t.Fatalf("integration set-up failed: %v", setupErr)
	}
}

// needSendmail is needEnv for the Sendmail tests: they also skip (or
// fail, with CI=true) when Sendmail cannot be had, and fail when it did
// not start.
func needSendmail(t *testing.T) {
	t.Helper()
	for _, reason := range []string{sendmailSkip, skipReason} {
		if reason == "" {
			continue
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true, and the integration environment is incomplete: %s", reason)
		}
		t.Skip(reason)
	}
	if sendmailErr != nil {
		t.Fatalf("Sendmail set-up failed: %v", sendmailErr)
	}
}

// testDir makes a folder for one test under the run's work folder,
// readable by the daemons' users.
func testDir(t *testing.T, name string) string {
	t.Helper()
	base := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	dir := filepath.Join(workDir, base, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for d := dir; d != workDir; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var (
	portsMu sync.Mutex
	// portsUsed keeps a run from handing out one port twice.
	portsUsed = map[int]bool{}
)

// freePort returns a loopback port that is free for network ("tcp" or
// "udp") at the time of the call.
func freePort(network string) (int, error) {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 50 {
		var port int
		switch network {
		case "udp":
			c, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				return 0, err
			}
			port = c.LocalAddr().(*net.UDPAddr).Port
			c.Close()
		default:
			l, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				return 0, err
			}
			port = l.Addr().(*net.TCPAddr).Port
			l.Close()
		}
		if !portsUsed[port] {
			portsUsed[port] = true
			return port, nil
		}
	}
	return 0, errors.New("no free port found")
}

func mustFreePort(t *testing.T, network string) int {
	t.Helper()
	port, err := freePort(network)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// waitTCP waits until addr accepts a TCP connection, or timeout passes,
// or exited is closed (the server died).
func waitTCP(addr string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("the server exited before %s accepted connections", addr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s accepts no connection after %v: %w", addr, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// process is a daemon started by a test, in the foreground, with its
// output in a file.
type process struct {
	name    string
	cmd     *exec.Cmd
	outPath string
	exited  chan struct{}
	waitErr error
	once    sync.Once
}

// startProcess runs argv with stdout and stderr going to outPath.
func startProcess(name, outPath string, argv ...string) (*process, error) {
	out, err := os.OpenFile(outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close()

	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = out
	cmd.Stderr = out
	// Pdeathsig: a daemon does not outlive a test binary that crashed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, outPath: outPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// stop sends SIGTERM, waits up to grace, then kills. Calling it again
// does nothing.
func (p *process) stop(grace time.Duration) {
	p.once.Do(func() {
		select {
		case <-p.exited:
			return
		default:
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(grace):
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
}

// running reports whether the process has not exited yet.
func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// output returns what the process wrote so far.
func (p *process) output() string {
	b, _ := os.ReadFile(p.outPath)
	return string(b)
}

// logFile follows a growing text file, such as Postfix's maillog.
type logFile struct {
	path string
}

// mark returns the current end of the file: read from there to see only
// what comes later.
func (f logFile) mark() int64 {
	fi, err := os.Stat(f.path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// linesSince returns the complete lines written after mark.
func (f logFile) linesSince(mark int64) []string {
	b, err := os.ReadFile(f.path)
	if err != nil || int64(len(b)) <= mark {
		return nil
	}
	b = b[mark:]
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		b = b[:i+1]
	} else {
		return nil
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

// grep returns the lines after mark that contain every one of subs.
func (f logFile) grep(mark int64, subs ...string) []string {
	var found []string
	for _, line := range f.linesSince(mark) {
		if containsAll(line, subs...) {
			found = append(found, line)
		}
	}
	return found
}

// waitFor polls until a line after mark contains every one of subs, and
// returns it; it fails the test after timeout.
func (f logFile) waitFor(t *testing.T, mark int64, timeout time.Duration, subs ...string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if found := f.grep(mark, subs...); len(found) > 0 {
			return found[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no line with %q within %v; lines since the mark:\n%s",
				filepath.Base(f.path), subs, timeout, strings.Join(f.linesSince(mark), "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// run runs a command and returns its combined output.
func run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
