//go:build integration

package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// mtaHostname is the Postfix instance's myhostname.
	mtaHostname = "mx.test.local"
	// saslRealm is the realm of every test account: logins are
	// NAME@saslRealm.
	saslRealm = "test.local"
	// saslPassword is every test account's password.
	saslPassword = "correct horse battery"
)

// postfix is a private Postfix instance: its own config_directory,
// queue_directory, data_directory and maillog_file, started with
// `postfix -c DIR`. It has two smtpd listeners: one that calls the milter
// (milter_default_action=tempfail, so a missing milter fails a test
// instead of letting mail through) and one without milters, for checks
// of the instance itself.
type postfix struct {
	dir      string // the run's postfix folder
	confDir  string
	queueDir string
	dataDir  string
	sasldb   string
	log      logFile

	// milterSMTP is host:port of the smtpd that calls the milter;
	// plainSMTP of the smtpd without milter.
	milterSMTP string
	plainSMTP  string
	// milterAddr is host:port where the milter must listen.
	milterAddr string

	usersMu sync.Mutex
	users   map[string]bool
}

// startPostfix writes a Postfix configuration under dir and starts it.
func startPostfix(dir string) (*postfix, error) {
	p := &postfix{
		dir:      dir,
		confDir:  filepath.Join(dir, "etc"),
		queueDir: filepath.Join(dir, "queue"),
		dataDir:  filepath.Join(dir, "data"),
		sasldb:   filepath.Join(dir, "sasldb2"),
		log:      logFile{filepath.Join(dir, "maillog")},
		users:    map[string]bool{},
	}
	var ports [3]int
	for i := range ports {
		port, err := freePort("tcp")
		if err != nil {
			return nil, err
		}
		ports[i] = port
	}
	p.milterSMTP = fmt.Sprintf("127.0.0.1:%d", ports[0])
	p.plainSMTP = fmt.Sprintf("127.0.0.1:%d", ports[1])
	p.milterAddr = fmt.Sprintf("127.0.0.1:%d", ports[2])

	for _, d := range []string{dir, p.confDir, p.queueDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
		if err := os.Chmod(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := p.writeConfig(); err != nil {
		return nil, err
	}
	if err := p.makeSASLDB(); err != nil {
		return nil, err
	}

	if out, err := run("postfix", "-c", p.confDir, "check"); err != nil {
		return nil, fmt.Errorf("postfix check: %w", err)
	} else if strings.TrimSpace(out) != "" {
		fmt.Fprintf(os.Stderr, "integration: postfix check says:\n%s", out)
	}
	if _, err := run("postfix", "-c", p.confDir, "start"); err != nil {
		return nil, fmt.Errorf("postfix start: %w\nmaillog:\n%s", err, p.tail())
	}
	for _, addr := range []string{p.milterSMTP, p.plainSMTP} {
		if err := waitTCP(addr, 20*time.Second, nil); err != nil {
			p.stop()
			return nil, fmt.Errorf("postfix smtpd: %w\nmaillog:\n%s", err, p.tail())
		}
	}
	return p, nil
}

// mainCF is the instance's main.cf. Every transport is discard:, so
// nothing ever leaves the machine; peer name lookups are off, so
// Postfix sends no DNS query either. inet_protocols must include IPv6 for
// XCLIENT ADDR=IPV6:...: with ipv4 alone Postfix answers "501 5.5.4 Bad
// ADDR syntax" (seen).
const mainCF = `# written by the authbl-milter integration tests
compatibility_level = 3.6
queue_directory = {{queue}}
data_directory = {{data}}
maillog_file = {{maillog}}
maillog_file_prefixes = {{dir}}
myhostname = ` + mtaHostname + `
mydomain = test.local
myorigin = $myhostname
mydestination =
relayhost =
relay_domains =
alias_maps =
alias_database =
local_recipient_maps =
inet_interfaces = loopback-only
inet_protocols = all
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
smtputf8_enable = no
biff = no
default_transport = discard:
relay_transport = discard:
local_transport = discard:
virtual_transport = discard:
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
smtpd_sasl_security_options = noanonymous
cyrus_sasl_config_path = {{etc}}/sasl
smtpd_tls_security_level = none
milter_protocol = 6
milter_connect_timeout = 5s
milter_command_timeout = 30s
`

// masterCF is the instance's master.cf: no chroot anywhere, no port 25,
// and the two test listeners.
const masterCF = `# written by the authbl-milter integration tests
{{milterSMTP}} inet n - n - - smtpd
  -o syslog_name=postfix/milter-smtpd
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_milters=inet:{{milterAddr}}
  -o milter_default_action=tempfail
{{plainSMTP}} inet n - n - - smtpd
  -o syslog_name=postfix/plain-smtpd
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_milters=
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// smtpdConf is Cyrus SASL's smtpd.conf. Debian's Postfix 3.7 looks for
// it in CONFIG_DIRECTORY/sasl/ then /usr/lib/sasl/ (seen with strace),
// and with `postfix -c DIR` that is DIR/sasl/, whatever
// cyrus_sasl_config_path says; the parameter points there too, for
// builds that honour it. Where no smtpd.conf is found, Cyrus falls back
// to /etc/sasldb2 and every AUTH fails with "Password verification
// failed".
const smtpdConf = `pwcheck_method: auxprop
auxprop_plugin: sasldb
mech_list: PLAIN LOGIN
sasldb_path: {{sasldb}}
`

func (p *postfix) expand(s string) string {
	return strings.NewReplacer(
		"{{dir}}", p.dir,
		"{{etc}}", p.confDir,
		"{{queue}}", p.queueDir,
		"{{data}}", p.dataDir,
		"{{maillog}}", p.log.path,
		"{{sasldb}}", p.sasldb,
		"{{milterSMTP}}", p.milterSMTP,
		"{{plainSMTP}}", p.plainSMTP,
		"{{milterAddr}}", p.milterAddr,
	).Replace(s)
}

func (p *postfix) writeConfig() error {
	if err := os.MkdirAll(filepath.Join(p.confDir, "sasl"), 0o755); err != nil {
		return err
	}
	files := map[string]string{"main.cf": mainCF, "master.cf": masterCF, "sasl/smtpd.conf": smtpdConf}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(p.confDir, name), []byte(p.expand(text)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// makeSASLDB creates the sasldb, owned by postfix:sasl so that smtpd
// (user postfix) reads it whether or not postfix is in group sasl.
func (p *postfix) makeSASLDB() error {
	if err := p.addUser("probe"); err != nil {
		return err
	}
	u, err := lookupUser("postfix")
	if err != nil {
		return err
	}
	gid := u.gid
	if g, err := user.LookupGroup("sasl"); err == nil {
		gid, _ = strconv.Atoi(g.Gid)
	}
	if err := os.Chown(p.sasldb, u.uid, gid); err != nil {
		return err
	}
	return os.Chmod(p.sasldb, 0o640)
}

// addUser creates the SASL account name@saslRealm with saslPassword.
func (p *postfix) addUser(name string) error {
	p.usersMu.Lock()
	defer p.usersMu.Unlock()
	if p.users[name] {
		return nil
	}
	cmd := exec.Command("saslpasswd2", "-p", "-c", "-f", p.sasldb, "-u", saslRealm, name)
	cmd.Stdin = strings.NewReader(saslPassword)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("saslpasswd2 %s: %w: %s", name, err, out)
	}
	p.users[name] = true
	return nil
}

// account creates a SASL account for the test and returns its login.
func (p *postfix) account(t *testing.T, name string) string {
	t.Helper()
	if err := p.addUser(name); err != nil {
		t.Fatal(err)
	}
	return name + "@" + saslRealm
}

// stop stops the instance and waits until its master process is gone
// (`postfix stop` returns before that).
func (p *postfix) stop() {
	pid := 0
	if b, err := os.ReadFile(filepath.Join(p.queueDir, "pid", "master.pid")); err == nil {
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if _, err := run("postfix", "-c", p.confDir, "stop"); err != nil {
		fmt.Fprintf(os.Stderr, "integration: %v\n", err)
	}
	for deadline := time.Now().Add(15 * time.Second); pid > 0 && time.Now().Before(deadline); {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	if pid > 0 {
		fmt.Fprintf(os.Stderr, "integration: postfix master %d still runs after stop\n", pid)
	}
}

// tail returns the last lines of the maillog, for error messages.
func (p *postfix) tail() string {
	lines := p.log.linesSince(0)
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// queueEntry is one message as `postqueue -j` prints it.
type queueEntry struct {
	QueueName  string `json:"queue_name"`
	QueueID    string `json:"queue_id"`
	Sender     string `json:"sender"`
	Recipients []struct {
		Address     string `json:"address"`
		DelayReason string `json:"delay_reason"`
	} `json:"recipients"`
}

// queue returns the messages in the instance's queues.
func (p *postfix) queue(t *testing.T) []queueEntry {
	t.Helper()
	out, err := exec.Command("postqueue", "-c", p.confDir, "-j").Output()
	if err != nil {
		t.Fatalf("postqueue -j: %v", err)
	}
	var entries []queueEntry
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	for sc.Scan() {
		var e queueEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("postqueue -j: %v: %s", err, sc.Text())
		}
		entries = append(entries, e)
	}
	return entries
}

// waitQueued waits until the message queueID is in queue name ("hold",
// "active", ...) and returns its entry.
func (p *postfix) waitQueued(t *testing.T, queueID, name string, timeout time.Duration) queueEntry {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		entries := p.queue(t)
		for _, e := range entries {
			if e.QueueID == queueID && e.QueueName == name {
				return e
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s is not in the %s queue after %v; queue: %+v",
				queueID, name, timeout, entries)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// deleteQueued removes a message from the queues.
func (p *postfix) deleteQueued(t *testing.T, queueID string) {
	t.Helper()
	if _, err := run("postsuper", "-c", p.confDir, "-d", queueID); err != nil {
		t.Error(err)
	}
}

// waitDelivered waits for Postfix to log the discard delivery of
// queueID.
func (p *postfix) waitDelivered(t *testing.T, mark int64, queueID string) string {
	t.Helper()
	return p.log.waitFor(t, mark, 15*time.Second, queueID+":", "status=sent")
}

type sysUser struct{ uid, gid int }

func lookupUser(name string) (sysUser, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return sysUser{}, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return sysUser{uid, gid}, nil
}
