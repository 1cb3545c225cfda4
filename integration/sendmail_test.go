//go:build integration

package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// sendmailDir is where setup.sh unpacks Debian's sendmail-bin and
// sendmail-cf (they conflict with postfix, so they are not installed).
var sendmailDir = func() string {
	if d := os.Getenv("AUTHBL_IT_SENDMAIL_DIR"); d != "" {
		return d
	}
	return "/opt/authbl-it/sendmail"
}()

func sendmailBin() string { return filepath.Join(sendmailDir, "usr/libexec/sendmail/sendmail") }
func sendmailCF() string  { return filepath.Join(sendmailDir, "usr/share/sendmail/cf") }

// sendmailMissing names what Sendmail needs and the machine lacks; the
// Postfix tests do not depend on it.
func sendmailMissing() []string {
	var missing []string
	_, errBin := os.Stat(sendmailBin())
	_, errCF := os.Stat(filepath.Join(sendmailCF(), "m4/cf.m4"))
	if errBin != nil || errCF != nil {
		missing = append(missing, "Sendmail unpacked in "+sendmailDir+
			" (packages sendmail-bin and sendmail-cf)")
	}
	for _, tool := range []struct{ name, pkg string }{
		{"m4", "m4"}, {"unshare", "util-linux"}, {"mount", "mount"}, {"hostname", "hostname"},
	} {
		if _, err := exec.LookPath(tool.name); err != nil {
			missing = append(missing, fmt.Sprintf("%s (package %s)", tool.name, tool.pkg))
		}
	}
	if len(missing) > 0 {
		return missing
	}
	// Sendmail runs in private mount and UTS namespaces: see sendmail.
	if out, err := exec.Command("unshare", "--mount", "--uts", "true").CombinedOutput(); err != nil {
		missing = append(missing, fmt.Sprintf("private mount and UTS namespaces"+
			" (unshare --mount --uts: %v: %s; it needs CAP_SYS_ADMIN)",
			err, strings.TrimSpace(string(out))))
	}
	return missing
}

// sendmail is a private Sendmail 8.17 daemon (sendmail -bD) with its own
// sendmail.cf, queue, sasldb and log, listening on loopback only.
//
// Sendmail looks for its fully qualified host name before it reads its
// config file (confDOMAIN_NAME comes too late), sleeps a minute when the
// name is unqualified, and asks DNS for it. It logs through syslog(3) to
// /dev/log only, and Cyrus SASL reads Sendmail.conf from fixed folders
// only (the binary is setgid, so SASL_CONF_PATH is ignored). So each
// sendmail command runs through ns.sh in private mount and UTS
// namespaces: the host name is mx.test.local there, /etc/hosts,
// /etc/nsswitch.conf and /etc/resolv.conf are the test's own (files only,
// no DNS server but 127.0.0.1), /dev is a small tmpfs whose log entry
// points at the test's syslog socket, and /usr/lib/sasl2 holds the
// test's Sendmail.conf. Nothing global changes.
type sendmail struct {
	dir    string
	cfPath string
	sasldb string
	// smtp is host:port of the daemon; milterAddr where the milter must
	// listen.
	smtp       string
	milterAddr string
	// log holds what Sendmail sent to syslog, one message a line.
	log    logFile
	syslog *net.UnixConn
	proc   *process

	usersMu sync.Mutex
	users   map[string]bool
}

// sendmailOptions are what a test may change in the configuration.
type sendmailOptions struct {
	// EnvFromMacros, when set, is the site's confMILTER_MACROS_ENVFROM.
	EnvFromMacros string
}

// sendmailMC is the instance's sendmail.mc. The README's "Running with
// Sendmail" section shows the same lines.
const sendmailMC = `divert(-1)
# written by the authbl-milter integration tests
divert(0)dnl
VERSIONID(` + "`authbl-milter integration test'" + `)dnl
OSTYPE(` + "`linux'" + `)dnl
dnl Everything the instance writes stays in its folder.
define(` + "`confDOMAIN_NAME', `" + mtaHostname + `')dnl
define(` + "`QUEUE_DIR', `{{dir}}/mqueue'" + `)dnl
define(` + "`STATUS_FILE', `{{dir}}/statistics'" + `)dnl
define(` + "`ALIAS_FILE', `{{dir}}/aliases'" + `)dnl
define(` + "`confPID_FILE', `{{dir}}/sendmail.pid'" + `)dnl
define(` + "`confHELP_FILE', `" + `{{sendmailDir}}/etc/mail/helpfile')dnl
dnl No DNS: host names from files only, no ident, no interface probing.
define(` + "`confSERVICE_SWITCH_FILE', `{{dir}}/service.switch'" + `)dnl
define(` + "`confHOSTS_FILE', `{{dir}}/hosts'" + `)dnl
define(` + "`confTO_IDENT', `0'" + `)dnl
define(` + "`confDONT_PROBE_INTERFACES', `true'" + `)dnl
FEATURE(` + "`nocanonify'" + `)dnl
FEATURE(` + "`accept_unresolvable_domains'" + `)dnl
dnl Accepted mail stays in the queue: nothing is ever delivered.
define(` + "`confDELIVERY_MODE', `queue'" + `)dnl
define(` + "`confLOG_LEVEL', `14'" + `)dnl
dnl SMTP AUTH through Cyrus SASL (Sendmail.conf: sasldb).
define(` + "`confAUTH_MECHANISMS', `PLAIN LOGIN'" + `)dnl
TRUST_AUTH_MECH(` + "`PLAIN LOGIN'" + `)dnl
dnl Loopback clients relay without AUTH, like Postfix's mynetworks.
RELAY_DOMAIN(` + "`127'" + `)dnl
dnl One listener, on loopback; no MSA on port 587.
FEATURE(` + "`no_default_msa'" + `)dnl
DAEMON_OPTIONS(` + "`Port={{port}}, Addr=127.0.0.1, Name=MTA'" + `)dnl
dnl The milter; F=T: mail is tempfailed while it is down.
INPUT_MAIL_FILTER(` + "`authbl-milter', `S=inet:{{milterPort}}@127.0.0.1, F=T, T=C:5s;S:10s;R:10s;E:1m'" + `)dnl
define(` + "`confMILTER_LOG_LEVEL', `14'" + `)dnl
{{envfrom}}MAILER(` + "`smtp'" + `)dnl
`

// nsScript runs a command (its arguments after the folder) in the
// namespaces described at sendmail. unshare starts it with --mount
// --uts: mounts propagate nowhere, and the host name is the namespace's.
const nsScript = `#!/bin/sh
# written by the authbl-milter integration tests: ns.sh DIR COMMAND...
set -e
d=$1
shift
mount --make-rprivate /
hostname ` + mtaHostname + `
mount --bind "$d/hosts" /etc/hosts
mount --bind "$d/resolv.conf" /etc/resolv.conf
if [ -e /etc/nsswitch.conf ]; then mount --bind "$d/nsswitch.conf" /etc/nsswitch.conf; fi
# Cyrus SASL looks for Sendmail.conf in these folders, in this order;
# /usr/lib/sasl2 comes with libsasl2-2.
for c in /etc/sasl2 /etc/sasl /usr/lib/sasl2; do
	if [ -d "$c" ]; then mount --bind "$d/sasl" "$c"; fi
done
mkdir -p "$d/hostdev"
mount --rbind /dev "$d/hostdev"
mount -t tmpfs -o mode=755 tmpfs /dev
for n in null zero random urandom full; do
	[ -e "$d/hostdev/$n" ] || continue
	: >"/dev/$n"
	mount --bind "$d/hostdev/$n" "/dev/$n"
done
umount -l "$d/hostdev"
ln -s "$d/syslog.sock" /dev/log
exec "$@"
`

// The instance's small files.
var sendmailFiles = map[string]string{
	"hosts":          "127.0.0.1\tlocalhost\n127.0.0.1\t" + mtaHostname + " mx\n::1\tlocalhost\n",
	"resolv.conf":    "nameserver 127.0.0.1\noptions attempts:1 timeout:1\n",
	"nsswitch.conf":  "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\n",
	"service.switch": "hosts\tfiles\naliases\tfiles\n",
	"aliases":        "",
	"statistics":     "",
	"sasl/Sendmail.conf": "pwcheck_method: auxprop\nauxprop_plugin: sasldb\n" +
		"mech_list: PLAIN LOGIN\nsasldb_path: {{dir}}/sasldb2\n",
}

// startSendmail writes a configuration under dir and starts the daemon.
func startSendmail(dir string, opts sendmailOptions) (*sendmail, error) {
	s := &sendmail{
		dir:    dir,
		cfPath: filepath.Join(dir, "sendmail.cf"),
		sasldb: filepath.Join(dir, "sasldb2"),
		log:    logFile{filepath.Join(dir, "maillog")},
		users:  map[string]bool{},
	}
	ports := [2]int{}
	for i := range ports {
		port, err := freePort("tcp")
		if err != nil {
			return nil, err
		}
		ports[i] = port
	}
	s.smtp = fmt.Sprintf("127.0.0.1:%d", ports[0])
	s.milterAddr = fmt.Sprintf("127.0.0.1:%d", ports[1])

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := s.writeConfig(ports[0], ports[1], opts); err != nil {
		return nil, err
	}
	if err := s.addUser("probe"); err != nil {
		return nil, err
	}
	if err := s.listenSyslog(); err != nil {
		return nil, err
	}

	var err error
	s.proc, err = startProcess("sendmail", filepath.Join(dir, "sendmail.out"),
		s.command("-bD")...)
	if err != nil {
		s.syslog.Close()
		return nil, err
	}
	if err := waitTCP(s.smtp, 20*time.Second, s.proc.exited); err != nil {
		s.stop()
		return nil, fmt.Errorf("sendmail: %w\noutput:\n%s\nlog:\n%s", err, s.proc.output(), s.tail())
	}
	return s, nil
}

func (s *sendmail) expand(text string, port, milterPort int, opts sendmailOptions) string {
	envfrom := ""
	if opts.EnvFromMacros != "" {
		envfrom = "define(`confMILTER_MACROS_ENVFROM', `" + opts.EnvFromMacros + "')dnl\n"
	}
	return strings.NewReplacer(
		"{{dir}}", s.dir,
		"{{sendmailDir}}", sendmailDir,
		"{{port}}", fmt.Sprint(port),
		"{{milterPort}}", fmt.Sprint(milterPort),
		"{{envfrom}}", envfrom,
	).Replace(text)
}

// writeConfig writes sendmail.mc, makes sendmail.cf from it with m4, and
// writes the other files. Sendmail wants its queue private to root.
func (s *sendmail) writeConfig(port, milterPort int, opts sendmailOptions) error {
	for _, d := range []string{"mqueue", "sasl"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o700); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(s.dir, "sasl"), 0o755); err != nil {
		return err
	}
	files := map[string]string{"sendmail.mc": sendmailMC, "ns.sh": nsScript}
	for name, text := range sendmailFiles {
		files[name] = text
	}
	for name, text := range files {
		text = s.expand(text, port, milterPort, opts)
		if err := os.WriteFile(filepath.Join(s.dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}

	cmd := exec.Command("m4", "-D_CF_DIR_="+sendmailCF()+"/",
		filepath.Join(sendmailCF(), "m4/cf.m4"), filepath.Join(s.dir, "sendmail.mc"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cf, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		return fmt.Errorf("m4 sendmail.mc: %v: %s", err, stderr.String())
	}
	return os.WriteFile(s.cfPath, cf, 0o644)
}

// command is the argv that runs sendmail with args in the namespaces.
func (s *sendmail) command(args ...string) []string {
	argv := []string{"unshare", "--mount", "--uts", "--propagation", "private",
		"sh", filepath.Join(s.dir, "ns.sh"), s.dir, sendmailBin(), "-C", s.cfPath}
	return append(argv, args...)
}

// run runs a sendmail command, such as -bp, and returns its output.
func (s *sendmail) run(args ...string) (string, error) {
	argv := s.command(args...)
	return run(argv[0], argv[1:]...)
}

// listenSyslog receives what Sendmail logs, on the socket that /dev/log
// points to in its namespace, and appends it to the maillog.
func (s *sendmail) listenSyslog() error {
	path := filepath.Join(s.dir, "syslog.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return err
	}
	if err := os.Chmod(path, 0o666); err != nil {
		conn.Close()
		return err
	}
	out, err := os.OpenFile(s.log.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		conn.Close()
		return err
	}
	s.syslog = conn
	go func() {
		defer out.Close()
		buf := make([]byte, 64*1024)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msg := strings.TrimRight(string(buf[:n]), "\n\x00")
			out.WriteString(strings.ReplaceAll(msg, "\n", " ") + "\n")
		}
	}()
	return nil
}

// stop stops the daemon and the syslog reader.
func (s *sendmail) stop() {
	if s.proc != nil {
		s.proc.stop(10 * time.Second)
	}
	if s.syslog != nil {
		time.Sleep(100 * time.Millisecond) // the last words
		s.syslog.Close()
	}
}

// tail returns the last lines of the log, for error messages.
func (s *sendmail) tail() string {
	lines := s.log.linesSince(0)
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return strings.Join(lines, "\n")
}

// addUser creates the SASL account name@saslRealm with saslPassword in
// the instance's sasldb, which only root (Sendmail) reads.
func (s *sendmail) addUser(name string) error {
	s.usersMu.Lock()
	defer s.usersMu.Unlock()
	if s.users[name] {
		return nil
	}
	cmd := exec.Command("saslpasswd2", "-p", "-c", "-f", s.sasldb, "-u", saslRealm, name)
	cmd.Stdin = strings.NewReader(saslPassword)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("saslpasswd2 %s: %w: %s", name, err, out)
	}
	if err := os.Chmod(s.sasldb, 0o600); err != nil {
		return err
	}
	s.users[name] = true
	return nil
}

// account creates a SASL account for the test and returns its login.
func (s *sendmail) account(t *testing.T, name string) string {
	t.Helper()
	if err := s.addUser(name); err != nil {
		t.Fatal(err)
	}
	return name + "@" + saslRealm
}

// quarantined returns what `mailq -qQ` says about the quarantined
// message queueID: its lines, reason included, or "" when it is not
// listed.
func (s *sendmail) quarantined(t *testing.T, queueID string) string {
	t.Helper()
	out, err := s.run("-bp", "-qQ")
	if err != nil {
		t.Fatalf("mailq -qQ: %v", err)
	}
	return queueBlock(out, queueID)
}

// queueBlock returns the lines of mailq output that describe queueID:
// the line that starts with it and the indented ones after it (the
// quarantine reason, cut to the width of the listing, and recipients).
func queueBlock(out, queueID string) string {
	var block []string
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, queueID+" "):
			block = append(block, line)
		case len(block) == 0:
		case strings.TrimLeft(line, " \t") != line && !strings.Contains(line, "Total requests"):
			block = append(block, line)
		default:
			return strings.Join(block, "\n")
		}
	}
	return strings.Join(block, "\n")
}

// sendmailAccepted finds the queue id in Sendmail's reply to the final
// dot: "250 2.0.0 6B4GDRiS005606 Message accepted for delivery".
var sendmailAccepted = regexp.MustCompile(`^2\.0\.0 ([0-9A-Za-z]+) Message accepted`)
