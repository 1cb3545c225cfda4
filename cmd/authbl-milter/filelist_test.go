package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestListsServedFromFiles: check and selftest work with lists that are
// local files, and need no DNS server at all.
func TestListsServedFromFiles(t *testing.T) {
	dir := t.TempDir()
	zone := filepath.Join(dir, "authbl.zone")
	rcpt := filepath.Join(dir, "rcpt.zone")
	files := map[string]string{
		zone: "$DATASET ip4set @\n:127.0.0.4:\n127.0.0.2\n192.0.2.66\n" +
			"$DATASET ip6trie @\n:127.0.0.4:\n2001:db8::66\n",
		// sha1("dropbox@example.net")
		rcpt: ":127.0.0.2:\n83182b9c46e0dc942d908e8bb6f4138c6c48c381\n",
	}
	for path, text := range files {
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "config.toml")
	text := fmt.Sprintf(`
[dns]
servers = ["127.0.0.1:1"] # nothing answers here: no list may need it
[accounts]
path = %q
[[list]]
name = "mirror"
kind = "ip"
file = %q
format = "combined"
match = ["127.0.0.4"]
test_point = "127.0.0.2"
test_expect = "127.0.0.4"
[[list]]
name = "mirror-rcpt"
kind = "recipient"
file = %q
format = "dnset"
`, filepath.Join(dir, "accounts.db"), zone, rcpt)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := cli(t, "check", "-config", cfg, "192.0.2.66", "2001:db8::66",
		"<DropBox@Example.NET>", "198.51.100.1")
	if code != 1 {
		t.Fatalf("check: exit %d, want 1 (some listed):\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"192.0.2.66", "2001:db8::66", "<DropBox@Example.NET>"} {
		if !lineHas(out, want, "listed") {
			t.Errorf("check output does not list %s:\n%s", want, out)
		}
	}
	if !lineHas(out, "198.51.100.1", "clean") {
		t.Errorf("check output does not say 198.51.100.1 is clean:\n%s", out)
	}

	code, out, _ = cli(t, "selftest", "-config", cfg)
	if code != 0 || strings.Count(out, " ok") != 2 {
		t.Fatalf("selftest: exit %d:\n%s", code, out)
	}

	if err := os.Remove(zone); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = cli(t, "check", "-config", cfg, "192.0.2.66")
	if code != 2 || !strings.Contains(errOut, "mirror") {
		t.Fatalf("check without its file: exit %d, stderr %q", code, errOut)
	}
}

func lineHas(out string, parts ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			return true
		}
	}
	return false
}
