package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// noEnv parses without looking at the real environment.
var noEnv = loader{getenv: func(string) string { return "" }}

// oneList is the smallest [[list]] that makes a file complete.
const oneList = `
[[list]]
name = "local"
kind = "ip"
zone = "authbl.example.test"
`

// problemsOf returns the problems in err, failing when it is no *Errors.
func problemsOf(t *testing.T, err error) []KeyError {
	t.Helper()
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error %v (%T) is not *Errors", err, err)
	}
	return errs.List
}

func TestDefault(t *testing.T) {
	c := Default()
	checks := []struct{ name, got, want string }{
		{"milter.listen", c.Milter.Listen, "inet:127.0.0.1:8899"},
		{"milter.on_error", c.Milter.OnError, "accept"},
		{"milter.timeout", c.Milter.Timeout.String(), "5s"},
		{"action.mode", c.Action.Mode, "reject"},
		{"dns.timeout", c.DNS.Timeout.String(), "2s"},
		{"accounts.backend", c.Accounts.Backend, "sqlite"},
		{"accounts.path", c.Accounts.Path, "/var/lib/authbl-milter/accounts.db"},
		{"accounts.ttl", c.Accounts.TTL.String(), "0s"},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "json"},
		{"http.listen", c.HTTP.Listen, "127.0.0.1:9899"},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %q, want %q", ch.name, ch.got, ch.want)
		}
	}
	if !strings.HasPrefix(c.Action.RejectText, "5.7.1 ") {
		t.Errorf("reject_text %q does not start with 5.7.1", c.Action.RejectText)
	}
	if len(c.DNS.Servers) != 0 || len(c.Lists) != 0 {
		t.Errorf("servers %v, lists %v: want none", c.DNS.Servers, c.Lists)
	}
	// Default with one list is a valid configuration.
	c.Lists = []List{{Name: "l", Kind: KindIP, Zone: "bl.example.test"}}
	if err := c.Validate(); err != nil {
		t.Errorf("Default plus a list: %v", err)
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"5s", 5 * time.Second, false},
		{"1h30m", 90 * time.Minute, false},
		{"250ms", 250 * time.Millisecond, false},
		{"0s", 0, false},
		{"-1s", -time.Second, false}, // parses; Validate rejects it where it matters
		{"5", 0, true},
		{"five seconds", 0, true},
		{"", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var d Duration
			err := d.UnmarshalText([]byte(tt.in))
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), `"`+tt.in+`"`) {
					t.Fatalf("error %v: want one naming %q", err, tt.in)
				}
				return
			}
			if err != nil || d.Duration != tt.want {
				t.Fatalf("got %v, %v; want %v", d.Duration, err, tt.want)
			}
			text, _ := d.MarshalText()
			var back Duration
			if err := back.UnmarshalText(text); err != nil || back != d {
				t.Errorf("round trip through %q gave %v, %v", text, back, err)
			}
		})
	}
}

func TestParseDecodes(t *testing.T) {
	doc := `
[milter]
listen = "unix:/run/authbl-milter/milter.sock"
on_error = "tempfail"
timeout = "3s"

[dns]
servers = ["10.0.0.53", "[2001:db8::53]", "10.0.0.54:5353"]

[[list]]
name = "Local-IP"
kind = "ip"
zone = "AuthBL.Example.TEST."
match = ["127.0.0.2", "127.0.1.0/24"]

[[list]]
name = "local-rcpt"
kind = "recipient"
zone = "rcpt.example.test"
test_point = "test@example.test"

[accounts]
ttl = "720h"
allow = [" Monitor@Example.ORG "]
`
	c, err := noEnv.parse([]byte(doc), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Milter.Listen != "unix:/run/authbl-milter/milter.sock" ||
		c.Milter.OnError != "tempfail" || c.Milter.Timeout.Duration != 3*time.Second {
		t.Errorf("milter = %+v", c.Milter)
	}
	if c.Action != Default().Action {
		t.Errorf("action = %+v, want the default", c.Action)
	}
	wantServers := []string{"10.0.0.53:53", "[2001:db8::53]:53", "10.0.0.54:5353"}
	if !reflect.DeepEqual(c.DNS.Servers, wantServers) {
		t.Errorf("servers = %q, want %q", c.DNS.Servers, wantServers)
	}
	if len(c.Lists) != 2 {
		t.Fatalf("got %d lists, want 2", len(c.Lists))
	}
	l := c.Lists[0]
	if l.Name != "Local-IP" || l.Zone != "authbl.example.test" || l.Secret != "" {
		t.Errorf("list[0] = %+v", l)
	}
	wantPrefixes := mustPrefixes("127.0.0.2/32", "127.0.1.0/24")
	if !reflect.DeepEqual(l.MatchPrefixes, wantPrefixes) {
		t.Errorf("list[0] prefixes = %v, want %v", l.MatchPrefixes, wantPrefixes)
	}
	if !reflect.DeepEqual(c.Lists[1].MatchPrefixes, defaultMatch) {
		t.Errorf("list[1] prefixes = %v, want the default", c.Lists[1].MatchPrefixes)
	}
	if c.Accounts.TTL.Duration != 720*time.Hour {
		t.Errorf("ttl = %v", c.Accounts.TTL)
	}
	if !reflect.DeepEqual(c.Accounts.Allow, []string{"monitor@example.org"}) {
		t.Errorf("allow = %q", c.Accounts.Allow)
	}
	// Validate again: normalising is idempotent and the result stays valid.
	before := c.Redacted()
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate after Parse: %v", err)
	}
	if !reflect.DeepEqual(c.Redacted(), before) {
		t.Errorf("Validate changed a parsed config:\n%+v\n%+v", c.Redacted(), before)
	}
}

func TestParseUnknownKeys(t *testing.T) {
	tests := []struct {
		name, doc, key, msg string
	}{
		{"top level", "foo = 1\n" + oneList, "foo", "unknown key"},
		{"section", "[miltr]\nlisten = \"x\"\n" + oneList, "miltr",
			"unknown key (did you mean milter?)"},
		{"nested", "[milter]\nlistn = \"inet:127.0.0.1:1\"\n" + oneList, "milter.listn",
			"unknown key (did you mean listen?)"},
		{"case", "[milter]\nListen = \"inet:127.0.0.1:1\"\n" + oneList, "milter.Listen",
			"case-sensitive"},
		{"subtable", "[milter.sub]\nx = 1\n" + oneList, "milter.sub", "unknown key"},
		{"in second list", oneList + oneList + "zon = \"x\"\n", "list[1].zon",
			"did you mean zone?"},
		{"quoted", "[log]\n\"my key\" = 1\n" + oneList, `log."my key"`, "unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := noEnv.parse([]byte(tt.doc), "test.toml")
			ps := problemsOf(t, err)
			if tt.name == "in second list" { // the duplicate name is a second problem
				ps = ps[:1]
			}
			if len(ps) != 1 || ps[0].Key != tt.key || !strings.Contains(ps[0].Msg, tt.msg) {
				t.Fatalf("got %v; want one problem at %s containing %q", ps, tt.key, tt.msg)
			}
			if !strings.Contains(err.Error(), "test.toml: "+tt.key+": ") {
				t.Errorf("Error() = %q, want the source and key", err)
			}
		})
	}
}

func TestParseTypeErrors(t *testing.T) {
	tests := []struct {
		name, doc, key, msg string
	}{
		{"string", "[milter]\nlisten = 8899\n", "milter.listen",
			"must be a string, got an integer"},
		{"duration", "[milter]\ntimeout = \"5 seconds\"\n", "milter.timeout",
			`invalid duration "5 seconds"`},
		{"duration as integer", "[dns]\ntimeout = 2\n", "dns.timeout", `invalid duration "2"`},
		{"duration as table", "[dns]\ntimeout = {s = 2}\n", "dns.timeout",
			"must be a duration"},
		{"table", "milter = \"inet:127.0.0.1:1\"\n", "milter", "must be a table"},
		{"array", "[accounts]\nallow = \"a@b\"\n", "accounts.allow",
			"must be an array of strings, got a string"},
		{"array element", "[notify]\ncommand = [\"/bin/x\", 1.5]\n", "notify.command[1]",
			"must be a string, got a float"},
		{"list table", "[list]\nname = \"x\"\n", "list", "must be an array of tables"},
		{"boolean", "[log]\nlevel = true\n", "log.level", "got a boolean"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := tt.doc
			if tt.key != "list" {
				doc += oneList
			}
			_, err := noEnv.parse([]byte(doc), "test.toml")
			ps := problemsOf(t, err)
			if len(ps) != 1 || ps[0].Key != tt.key || !strings.Contains(ps[0].Msg, tt.msg) {
				t.Fatalf("got %v; want one problem at %s containing %q", ps, tt.key, tt.msg)
			}
		})
	}
}

func TestParseAllProblemsAtOnce(t *testing.T) {
	_, err := noEnv.load(t, "testdata/three-problems.toml")
	lines := strings.Split(err.Error(), "\n")
	want := []string{
		"testdata/three-problems.toml: milter.listn: unknown key",
		`testdata/three-problems.toml: action.mode: must be one of "reject", "quarantine",` +
			` "log", got "discard"`,
		`testdata/three-problems.toml: list[0].kind: must be "ip" or "recipient",` +
			` got "ipv4"`,
	}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), err)
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("line %d = %q, want it to start with %q", i+1, lines[i], want[i])
		}
	}
}

// load is Load with the loader's environment.
func (l loader) load(t *testing.T, path string) (*Config, error) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	l.dir = filepath.Dir(path)
	return l.parse(data, path)
}

func TestParseSyntaxError(t *testing.T) {
	doc := "[milter]\nlisten = \"inet:127.0.0.1:8899\"\ntimeout = 5s\n"
	_, err := noEnv.parse([]byte(doc), "test.toml")
	ps := problemsOf(t, err)
	if len(ps) != 1 || ps[0].Line != 3 || ps[0].Key != "" {
		t.Fatalf("got %+v, want one problem on line 3", ps)
	}
	if !strings.HasPrefix(err.Error(), "test.toml:3: toml: ") {
		t.Errorf("Error() = %q, want it to start with test.toml:3:", err)
	}
}

func TestParseNoLists(t *testing.T) {
	_, err := noEnv.parse([]byte("[log]\nlevel = \"debug\"\n"), "test.toml")
	ps := problemsOf(t, err)
	if len(ps) != 1 || ps[0].Key != "list" ||
		ps[0].Msg != "no lists configured: set [abusix] api_key or add a [[list]]" {
		t.Fatalf("got %v", ps)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(path, []byte(oneList), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// The real environment may hold an Abusix key: find our list by name.
	if l := c.Lists[len(c.Lists)-1]; l.Name != "local" || l.Zone != "authbl.example.test" {
		t.Errorf("last list = %+v", l)
	}

	_, err = Load(filepath.Join(dir, "missing.toml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "missing.toml") {
		t.Errorf("missing file: %v", err)
	}
}

// TestExample keeps config.toml.example loadable, true to Default, and
// complete: every key of the schema appears in it.
func TestExample(t *testing.T) {
	const path = "../config.toml.example"
	c, err := noEnv.load(t, path)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Lists) != 1 || c.Lists[0].Name != "local-authbl" {
		t.Fatalf("lists = %v, want local-authbl alone", c.Lists)
	}
	c.Lists = nil
	if def := Default(); !reflect.DeepEqual(*c, def) {
		t.Errorf("the example differs from Default:\n%+v\n%+v", *c, def)
	}

	withKey := loader{getenv: func(string) string { return "examplekey" }}
	c, err = withKey.load(t, path)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range c.Lists {
		names = append(names, l.Name)
	}
	want := []string{AbusixListName, AbusixRcptListName, "local-authbl"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("lists with a key in the environment = %q, want %q", names, want)
	}

	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	documented := exampleKeys(string(text))
	for _, key := range schemaKeys(reflect.TypeFor[Config](), "") {
		if !documented[key] {
			t.Errorf("key %s is missing from %s", key, path)
		}
	}
}

var (
	exampleSection = regexp.MustCompile(`^#?\[\[?([a-z_]+)\]\]?$`)
	exampleKey     = regexp.MustCompile(`^#?([a-z_]+) = `)
)

// exampleKeys returns "section.key" for every key set in text, commented
// out or not.
func exampleKeys(text string) map[string]bool {
	keys := make(map[string]bool)
	section := ""
	for _, line := range strings.Split(text, "\n") {
		if m := exampleSection.FindStringSubmatch(line); m != nil {
			section = m[1]
		} else if m := exampleKey.FindStringSubmatch(line); m != nil {
			keys[section+"."+m[1]] = true
		}
	}
	return keys
}

// schemaKeys returns the leaf keys of struct type t as "section.key".
func schemaKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for name, i := range fieldTags(t) {
		ft := t.Field(i).Type
		if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[Duration]() {
			keys = append(keys, schemaKeys(ft, prefix+name+".")...)
			continue
		}
		keys = append(keys, prefix+name)
	}
	return keys
}

func TestWriteTOML(t *testing.T) {
	doc := oneList + `
[accounts]
backend = "redis"
redis_url = "redis://:hunter2pass@redis.example.test:6379/0"

[notify]
webhook = ["https://hook:tokentoken@hooks.example.test/x"]
webhook_secret = "hmacsecret"
`
	c, err := noEnv.parse([]byte(doc), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := c.WriteTOML(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, secret := range []string{"hunter2pass", "tokentoken", "hmacsecret"} {
		if strings.Contains(out, secret) {
			t.Errorf("output holds %q:\n%s", secret, out)
		}
	}
	for _, want := range []string{
		`redis_url = "redis://:REDACTED@redis.example.test:6379/0"`,
		`webhook = ["https://hook:REDACTED@hooks.example.test/x"]`,
		`webhook_secret = "REDACTED"`,
		`timeout = "5s"`,
		"servers = []",
		"[[list]]\nname = \"local\"",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if c.Accounts.RedisURL != "redis://:hunter2pass@redis.example.test:6379/0" {
		t.Errorf("WriteTOML changed the config: %q", c.Accounts.RedisURL)
	}

	// The output is TOML of the same schema.
	back, err := noEnv.parse(buf.Bytes(), "output")
	if err != nil {
		t.Fatalf("the output does not parse: %v", err)
	}
	if back.Milter != c.Milter || back.Lists[0].Zone != c.Lists[0].Zone {
		t.Errorf("round trip: %+v, %+v", back.Milter, back.Lists[0])
	}
}

func TestRedactedIsDeep(t *testing.T) {
	c, err := noEnv.parse([]byte(oneList+"[dns]\nservers = [\"10.0.0.1\"]\n"), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	r := c.Redacted()
	r.DNS.Servers[0] = "changed"
	r.Lists[0].Name = "changed"
	r.Lists[0].MatchPrefixes[0] = mustPrefixes("10.0.0.0/8")[0]
	if c.DNS.Servers[0] != "10.0.0.1:53" || c.Lists[0].Name != "local" ||
		c.Lists[0].MatchPrefixes[0] != defaultMatch[0] {
		t.Errorf("changing the copy changed the original: %+v", c)
	}
}

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"listen", "listn", 1}, {"zone", "zon", 1}, {"", "abc", 3}, {"kind", "kind", 0},
		{"mode", "node", 1}, {"flaw", "lawn", 2},
	}
	for _, tt := range tests {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestParseListShapes(t *testing.T) {
	tests := []struct {
		name, doc string
		lists     int
		key       string
	}{
		{"inline array of tables", `list = [{name = "a", kind = "ip", zone = "a.test"}]`, 1, ""},
		{"array of integers", "list = [1, 2]", 0, "list"},
		{"empty array", "list = []", 0, "list"}, // no lists configured
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := noEnv.parse([]byte(tt.doc), "test.toml")
			if tt.key == "" {
				if err != nil || len(c.Lists) != tt.lists {
					t.Fatalf("got %v, %v; want %d lists", c, err, tt.lists)
				}
				return
			}
			ps := problemsOf(t, err)
			if ps[0].Key != tt.key {
				t.Fatalf("got %v, want a problem at %s", ps, tt.key)
			}
		})
	}
}
