package config

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// testKey is distinctive so that a leak is easy to find; mixed case shows
// that a key is found however it is written.
const testKey = "S3cretKeyZ9q7w2x4"

func envWith(key string) loader {
	return loader{getenv: func(name string) string {
		if name == EnvAbusixKey {
			return key
		}
		return ""
	}}
}

// assertNoKey fails when s holds the test key in any letter case.
func assertNoKey(t *testing.T, what, s string) {
	t.Helper()
	if strings.Contains(strings.ToLower(s), strings.ToLower(testKey)) {
		t.Errorf("%s holds the key:\n%s", what, s)
	}
}

func TestAbusixLists(t *testing.T) {
	doc := fmt.Sprintf("[abusix]\napi_key = %q\n%s", testKey, oneList)
	c, err := noEnv.parse([]byte(doc), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Lists) != 3 || c.Lists[2].Name != "local" {
		t.Fatalf("lists = %v, want the two Abusix lists, then local", c.Lists)
	}
	key := strings.ToLower(testKey)
	want := []List{
		{
			Name:          "abusix-authbl",
			Kind:          "ip",
			Zone:          key + ".authbl.mail.abusix.zone",
			Match:         []string{"127.0.0.4"},
			TestPoint:     "127.0.0.2",
			TestExpect:    "127.0.0.4",
			Secret:        key,
			MatchPrefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.4/32")},
		},
		{
			Name:          "abusix-authbl-rcpt",
			Kind:          "recipient",
			Zone:          key + ".authbl-rcpt.mail.abusix.zone",
			Secret:        key,
			MatchPrefixes: DefaultMatchPrefixes(),
		},
	}
	if !reflect.DeepEqual(c.Lists[:2], want) {
		t.Errorf("Abusix lists:\n got %#v\nwant %#v", c.Lists[:2], want)
	}

	ip, rcpt := c.Lists[0], c.Lists[1]
	for addr, want := range map[string]bool{
		"127.0.0.4": true, "127.0.0.2": false, "127.0.0.3": false, "127.255.255.254": false,
	} {
		if got := ip.Matches(netip.MustParseAddr(addr)); got != want {
			t.Errorf("authbl Matches(%s) = %v, want %v", addr, got, want)
		}
	}
	for addr, want := range map[string]bool{
		"127.0.0.2": true, "127.0.0.4": true, "127.255.255.254": false,
	} {
		if got := rcpt.Matches(netip.MustParseAddr(addr)); got != want {
			t.Errorf("authbl-rcpt Matches(%s) = %v, want %v", addr, got, want)
		}
	}

	if got := ip.DisplayZone(); got != "REDACTED.authbl.mail.abusix.zone" {
		t.Errorf("DisplayZone = %q", got)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate on the loaded config: %v", err)
	}
}

func TestAbusixKeySources(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	keyFile := write("abusix.key", "  filekey123\n")
	write("relative.key", "relativekey\n")

	tests := []struct {
		name, abusix, env, want string
	}{
		{"api_key", `api_key = "tomlkey"`, "", "tomlkey"},
		{"api_key over env", `api_key = "tomlkey"`, "envkey", "tomlkey"},
		{"api_key trimmed", `api_key = " tomlkey "`, "", "tomlkey"},
		{"file", fmt.Sprintf("api_key_file = %q", keyFile), "", "filekey123"},
		{"file over env", fmt.Sprintf("api_key_file = %q", keyFile), "envkey", "filekey123"},
		{"file relative to the config", `api_key_file = "relative.key"`, "", "relativekey"},
		{"env", "", "envkey", "envkey"},
		{"env trimmed", "", " envkey\n", "envkey"},
		{"env lowercased", "", "EnvKey", "envkey"},
		{"none", "", "", ""},
		{"none, blank env", "", "   ", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := envWith(tt.env)
			l.dir = dir
			doc := "[abusix]\n" + tt.abusix + "\n" + oneList
			c, err := l.parse([]byte(doc), "test.toml")
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if len(c.Lists) == 3 {
				got = c.Lists[0].Secret
			}
			if got != tt.want {
				t.Errorf("key %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAbusixKeyErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.key")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badKey := testKey + "!"
	badFile := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(badFile, []byte(badKey), 0o600); err != nil {
		t.Fatal(err)
	}
	long := testKey + strings.Repeat("a", 64)

	tests := []struct {
		name, abusix, env, key, msg string
	}{
		{"both", fmt.Sprintf("api_key = %q\napi_key_file = %q", testKey, empty), "",
			"abusix.api_key_file", "set api_key or api_key_file, not both"},
		{"bad characters", fmt.Sprintf("api_key = %q", badKey), "",
			"abusix.api_key", "not a valid key"},
		{"too long", fmt.Sprintf("api_key = %q", long), "", "abusix.api_key", "at most 63"},
		{"dot", fmt.Sprintf("api_key = %q", testKey+".x"), "", "abusix.api_key", "DNS label"},
		{"bad in file", fmt.Sprintf("api_key_file = %q", badFile), "",
			"abusix.api_key_file", "not a valid key"},
		{"bad in env", "", badKey, "abusix.api_key", "the key in $AUTHBL_ABUSIX_API_KEY is"},
		{"empty file", fmt.Sprintf("api_key_file = %q", empty), "",
			"abusix.api_key_file", "empty.key is empty"},
		{"missing file", `api_key_file = "/nonexistent/abusix.key"`, "",
			"abusix.api_key_file", "/nonexistent/abusix.key: no such file"},
		{"reserved name", fmt.Sprintf("api_key = %q", testKey) + strings.Replace(oneList,
			`"local"`, `"abusix-authbl"`, 1), "", "list[0].name", "is taken by a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := "[abusix]\n" + tt.abusix + "\n"
			if tt.key != "list[0].name" {
				doc += oneList
			}
			_, err := envWith(tt.env).parse([]byte(doc), "test.toml")
			ps := problemsOf(t, err)
			if len(ps) != 1 || ps[0].Key != tt.key || !strings.Contains(ps[0].Msg, tt.msg) {
				t.Fatalf("got %q; want one problem at %s containing %q", ps, tt.key, tt.msg)
			}
			assertNoKey(t, "the error", err.Error())
		})
	}
}

// TestAbusixKeyNeverShown looks for the key everywhere a Config is shown.
func TestAbusixKeyNeverShown(t *testing.T) {
	// A bad key on a line the TOML parser chokes on.
	_, err := noEnv.parse([]byte("[abusix]\napi_key = "+testKey+"\n"), "test.toml")
	if err == nil {
		t.Fatal("no error for an unquoted key")
	}
	assertNoKey(t, "the syntax error", err.Error())

	// Problems everywhere else, with a good key.
	doc := fmt.Sprintf(`
[abusix]
api_key = %q
[milter]
listen = "x"
[[list]]
name = "abusix-authbl"
kind = "ip"
zone = "bad zone"
`, testKey)
	_, err = noEnv.parse([]byte(doc), "test.toml")
	if n := len(problemsOf(t, err)); n != 3 {
		t.Errorf("got %d problems, want 3: %v", n, err)
	}
	assertNoKey(t, "the errors", err.Error())

	// A hand-written zone with the key in it, invalid.
	_, err = noEnv.parse([]byte(`[[list]]
name = "by-hand"
kind = "ip"
zone = "`+testKey+`.authbl.mail.abusix.zone!"
`), "test.toml")
	if err == nil || !strings.Contains(err.Error(), "REDACTED.authbl.mail.abusix.zone!") {
		t.Errorf("error %v: want the zone shown redacted", err)
	}
	assertNoKey(t, "the zone error", fmt.Sprint(err))

	c, err := envWith(testKey).parse([]byte(oneList), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := c.WriteTOML(&buf); err != nil {
		t.Fatal(err)
	}
	assertNoKey(t, "WriteTOML", buf.String())
	if n := strings.Count(buf.String(), "REDACTED."); n != 2 {
		t.Errorf("WriteTOML shows %d redacted zones, want 2:\n%s", n, buf.String())
	}
	assertNoKey(t, "Redacted", fmt.Sprintf("%#v", c.Redacted()))
	assertNoKey(t, "%v of the lists", fmt.Sprintf("%v %+v", c.Lists, c.Lists[0]))

	c.Abusix.APIKey = testKey // as when the key is in the file
	buf.Reset()
	if err := c.WriteTOML(&buf); err != nil {
		t.Fatal(err)
	}
	assertNoKey(t, "WriteTOML", buf.String())
	if !strings.Contains(buf.String(), `api_key = "REDACTED"`) {
		t.Errorf("WriteTOML does not show that a key is set:\n%s", buf.String())
	}
}

// TestParseEnvironment goes through Parse and the real environment.
func TestParseEnvironment(t *testing.T) {
	t.Setenv(EnvAbusixKey, testKey)
	c, err := Parse(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Lists) != 2 || c.Lists[0].Secret != strings.ToLower(testKey) {
		t.Errorf("lists = %v", c.Lists)
	}

	t.Setenv(EnvAbusixKey, "")
	_, err = Parse(nil, "")
	if err == nil || err.Error() != "config: list: "+errNoLists {
		t.Errorf("error %v, want no lists configured", err)
	}
}

func TestProviderZones(t *testing.T) {
	tests := []struct{ zone, secret, display string }{
		{"k3y.authbl.mail.abusix.zone", "k3y", "REDACTED.authbl.mail.abusix.zone"},
		{"K3Y.authbl.dq.spamhaus.net.", "k3y", "REDACTED.authbl.dq.spamhaus.net"},
		{"authbl.mail.abusix.zone", "", "authbl.mail.abusix.zone"},
		{"zen.dq.spamhaus.net", "", "zen.dq.spamhaus.net"},
		{"authbl.example.test", "", "authbl.example.test"},
	}
	for _, tt := range tests {
		t.Run(tt.zone, func(t *testing.T) {
			c := valid()
			c.Lists[0].Zone = tt.zone
			if err := c.Validate(); err != nil {
				t.Fatal(err)
			}
			l := c.Lists[0]
			if l.Secret != tt.secret || l.DisplayZone() != tt.display {
				t.Errorf("secret %q, display %q; want %q, %q", l.Secret, l.DisplayZone(),
					tt.secret, tt.display)
			}
		})
	}
}

func TestDisplayZone(t *testing.T) {
	tests := []struct{ zone, secret, want string }{
		{"abc.authbl.mail.abusix.zone", "abc", "REDACTED.authbl.mail.abusix.zone"},
		{"abc.authbl.mail.abusix.zone", "ABC", "REDACTED.authbl.mail.abusix.zone"},
		{"bl.example.test", "", "bl.example.test"},
		// Not a whole label: every occurrence goes.
		{"x.abc-def.abc.test", "abc-d", "x.REDACTEDef.abc.test"},
		{"x.Abc-Def.test", "abc-d", "x.REDACTEDef.test"},
	}
	for _, tt := range tests {
		l := List{Zone: tt.zone, Secret: tt.secret}
		if got := l.DisplayZone(); got != tt.want {
			t.Errorf("DisplayZone(%q, secret %q) = %q, want %q", tt.zone, tt.secret, got,
				tt.want)
		}
	}
}
