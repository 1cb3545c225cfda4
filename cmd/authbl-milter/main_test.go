package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/authbl-milter/authbl-milter/lookup/zoneserver"
)

// cli runs one command line and returns its exit code and output.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// testConfig writes a config for lists served by a zone server on
// loopback and returns its path.
func testConfig(t *testing.T, extra string) (string, *zoneserver.Server) {
	t.Helper()
	z := zoneserver.New()
	for _, err := range []error{
		z.AddIP("authbl.test", "127.0.0.2", "127.0.0.4"),
		z.AddIP("authbl.test", "192.0.2.66", "127.0.0.4"),
		z.AddIP("authbl.test", "192.0.2.254", "127.255.255.254"),
		z.AddRecipient("rcpt.test", "dropbox@example.net", "127.0.0.2"),
		z.Start("127.0.0.1:0"),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { z.Close() })
	dir := t.TempDir()
	cfg := fmt.Sprintf(`
[milter]
timeout = "1s"
[dns]
servers = [%q]
timeout = "500ms"
[accounts]
path = %q
[[list]]
name = "authbl"
kind = "ip"
zone = "authbl.test"
match = ["127.0.0.4"]
test_point = "127.0.0.2"
test_expect = "127.0.0.4"
[[list]]
name = "authbl-rcpt"
kind = "recipient"
zone = "rcpt.test"
%s`, z.Addr(), filepath.Join(dir, "accounts.db"), extra)
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, z
}

func TestCheckExitCodes(t *testing.T) {
	cfg, z := testConfig(t, "")
	tests := []struct {
		name  string
		items []string
		code  int
		lines []string
	}{
		{"clean", []string{"198.51.100.1", "friend@example.org"}, 0,
			[]string{"authbl       clean", "authbl-rcpt  clean"}},
		{"listed ip", []string{"192.0.2.66"}, 1, []string{"listed  127.0.0.4"}},
		{"listed recipient", []string{"<DropBox@Example.NET>"}, 1, []string{"authbl-rcpt  listed  127.0.0.2"}},
		{"error code is unexpected, not listed", []string{"192.0.2.254"}, 0,
			[]string{"unexpected  127.255.255.254"}},
		{"not an item", []string{"hostname"}, 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, _ := cli(t, append([]string{"check", "-config", cfg}, tt.items...)...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; output:\n%s", code, tt.code, out)
			}
			for _, l := range tt.lines {
				if !strings.Contains(out, l) {
					t.Errorf("output lacks %q:\n%s", l, out)
				}
			}
		})
	}

	t.Run("server failing", func(t *testing.T) {
		z.SetBehavior("authbl.test", zoneserver.ServFail)
		defer z.SetBehavior("authbl.test", zoneserver.Normal)
		code, out, _ := cli(t, "check", "192.0.2.66", "-config", cfg)
		if code != 2 || !strings.Contains(out, "error") {
			t.Fatalf("exit %d, output %q", code, out)
		}
	})
}

func TestSelftestCommand(t *testing.T) {
	cfg, z := testConfig(t, "")
	code, out, _ := cli(t, "selftest", "-config", cfg)
	if code != 0 || strings.Count(out, " ok") != 2 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if err := z.AddIP("authbl.test", "127.0.0.1", "127.0.0.4"); err != nil {
		t.Fatal(err)
	}
	code, out, _ = cli(t, "selftest", "-config", cfg)
	if code != 1 || !strings.Contains(out, "everything") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

func TestServeRefusesListThatListsEverything(t *testing.T) {
	cfg, z := testConfig(t, "")
	if err := z.AddIP("authbl.test", "127.0.0.1", "127.0.0.4"); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := cli(t, "serve", "-config", cfg)
	if code != 1 || !strings.Contains(errOut, `"list":"authbl"`) ||
		!strings.Contains(errOut, "self-test failed") {
		t.Fatalf("exit %d, log:\n%s", code, errOut)
	}
}

func TestConfigtestRedactsSecrets(t *testing.T) {
	const key = "verysecretkey42"
	t.Setenv("AUTHBL_ABUSIX_API_KEY", key)
	cfg, _ := testConfig(t, "")
	code, out, errOut := cli(t, "configtest", "-config", cfg)
	if code != 0 || strings.Contains(out+errOut, key) || !strings.Contains(out, "REDACTED") {
		t.Fatalf("exit %d, output:\n%s%s", code, out, errOut)
	}
}

func TestConfigtestReportsAllProblems(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("[milter]\nlistn = 1\non_error = \"maybe\"\n"), 0o600)
	code, _, errOut := cli(t, "configtest", "-config", bad)
	if code != 2 {
		t.Fatalf("exit %d", code)
	}
	for _, k := range []string{"milter.listn", "milter.on_error", "no lists"} {
		if !strings.Contains(errOut, k) {
			t.Errorf("errors lack %q:\n%s", k, errOut)
		}
	}
}

func TestAccountsCommands(t *testing.T) {
	cfg, _ := testConfig(t, "")
	steps := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"accounts", "list"}, 0, ""},
		{[]string{"accounts", "flag", "Bob@Example.com"}, 0, "flagged bob@example.com"},
		{[]string{"accounts", "flag", "bob@example.com"}, 0, "already flagged"},
		{[]string{"accounts", "list"}, 0, "bob@example.com"},
		{[]string{"accounts", "show", "BOB@example.com"}, 0, "reason:     manual"},
		{[]string{"accounts", "release", "bob@example.com"}, 0, "released bob@example.com"},
		{[]string{"accounts", "release", "bob@example.com"}, 1, ""},
		{[]string{"accounts", "show", "bob@example.com"}, 1, ""},
		{[]string{"accounts", "explode"}, 2, ""},
		{[]string{"accounts", "show"}, 2, ""},
	}
	for _, s := range steps {
		code, out, errOut := cli(t, append(s.args, "-config", cfg)...)
		if code != s.code || !strings.Contains(out, s.want) {
			t.Fatalf("%v: exit %d, output %q %q; want exit %d with %q",
				s.args, code, out, errOut, s.code, s.want)
		}
		if s.args[1] == "list" && s.want == "" && out != "" {
			t.Fatalf("list of an empty store printed %q", out)
		}
	}
	// The account name starts each line of the list.
	cli(t, "accounts", "flag", "zed@example.com", "-config", cfg)
	_, out, _ := cli(t, "accounts", "list", "-config", cfg)
	if !strings.HasPrefix(out, "zed@example.com ") {
		t.Fatalf("list line %q does not start with the account", out)
	}
}

func TestDemoRuns(t *testing.T) {
	code, out, errOut := cli(t, "demo")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := []string{
		"clean account, clean recipient",
		"login from a listed IP",
		"550 5.7.1 (reject)",
		`"reason":"flagged"`,
		`"reason":"recipient"`,
		"carol@example.com  ip         demo-authbl",
		"127.255.255.254",
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("demo output lacks %q", w)
		}
	}
	lines := strings.Split(out, "\n")
	for _, l := range lines {
		if strings.HasPrefix(l, "6 ") && !strings.HasSuffix(strings.TrimSpace(l), "accept              0") {
			t.Errorf("unauthenticated step: %q, want accept with 0 queries", l)
		}
		if strings.HasPrefix(l, "1 ") && !strings.Contains(l, " accept ") {
			t.Errorf("clean step: %q", l)
		}
	}
}

func TestUsageAndVersion(t *testing.T) {
	if code, out, _ := cli(t, "version"); code != 0 || !strings.HasPrefix(out, "authbl-milter ") {
		t.Fatalf("version: %d %q", code, out)
	}
	if code, _, errOut := cli(t, "frobnicate"); code != 2 || !strings.Contains(errOut, "usage") {
		t.Fatalf("unknown command: %d %q", code, errOut)
	}
	if code, _, _ := cli(t, "check", "-nope"); code != 2 {
		t.Fatalf("bad flag: %d", code)
	}
}

func TestAccountsListQuotesHostileNames(t *testing.T) {
	cfg, _ := testConfig(t, "")
	cli(t, "accounts", "flag", "evil\nforged@example.com 1 2", "-config", cfg)
	_, out, _ := cli(t, "accounts", "list", "-config", cfg)
	if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, `"evil\nforged@example.com 1 2"`) {
		t.Fatalf("list output %q", out)
	}
}
