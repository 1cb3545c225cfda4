package lookup_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/authbl-milter/authbl-milter/config"
	"github.com/authbl-milter/authbl-milter/lookup"
	"github.com/authbl-milter/authbl-milter/lookup/zonefile"
)

const ip4File = `# a local authbl mirror
:127.0.0.4:listed
127.0.0.2
192.0.2.66
198.51.100.0/24
!198.51.100.7
192.0.2.254 :127.255.255.254:
`

const combinedFile = `$DATASET ip4set @
:127.0.0.4:
127.0.0.2
192.0.2.66
$DATASET ip6trie @
:127.0.0.4:
2001:db8::66
`

// sha1("dropbox@example.net")
const rcptFile = ":127.0.0.2:dropbox\n" + "83182b9c46e0dc942d908e8bb6f4138c6c48c381\n"

// writeFile writes a list file whose modification time is a minute ago,
// so that it counts as settled.
func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Minute)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
}

func fileChecker(t *testing.T, lists ...config.List) *lookup.Checker {
	t.Helper()
	ls, err := lookup.NewLists(lists)
	must(t, err)
	return lookup.NewChecker(ls, nil, nil) // no DNS at all
}

// TestFileListAnswersLikeDNS: a list served from a file gives the results
// the same list served over DNS gives, through the same classification.
func TestFileListAnswersLikeDNS(t *testing.T) {
	dir := t.TempDir()
	ip4, comb, rcpt := filepath.Join(dir, "ip4.zone"), filepath.Join(dir, "authbl.zone"),
		filepath.Join(dir, "rcpt.zone")
	writeFile(t, ip4, ip4File)
	writeFile(t, comb, combinedFile)
	writeFile(t, rcpt, rcptFile)
	c := fileChecker(t,
		config.List{Name: "ip4", Kind: "ip", File: ip4, Format: "ip4set",
			MatchPrefixes: config.DefaultMatchPrefixes()},
		config.List{Name: "mirror", Kind: "ip", File: comb, Format: "combined",
			TestPoint: "127.0.0.2", TestExpect: "127.0.0.4"},
		config.List{Name: "rcpt", Kind: "recipient", File: rcpt, Format: "dnset"})

	tests := []struct {
		kind lookup.Kind
		item string
		want []lookup.Result // per list of the kind, in order
	}{
		{lookup.KindIP, "192.0.2.66", []lookup.Result{lookup.Listed, lookup.Listed}},
		{lookup.KindIP, "198.51.100.9", []lookup.Result{lookup.Listed, lookup.Clean}},
		{lookup.KindIP, "198.51.100.7", []lookup.Result{lookup.Clean, lookup.Clean}},
		{lookup.KindIP, "192.0.2.254", []lookup.Result{lookup.Unexpected, lookup.Clean}},
		{lookup.KindIP, "2001:db8::66", []lookup.Result{lookup.Clean, lookup.Listed}},
		{lookup.KindIP, "::ffff:192.0.2.66", []lookup.Result{lookup.Listed, lookup.Listed}},
		{lookup.KindRecipient, "<DropBox@Example.NET>", []lookup.Result{lookup.Listed}},
		{lookup.KindRecipient, "friend@example.org", []lookup.Result{lookup.Clean}},
	}
	for _, tt := range tests {
		item := tt.item
		if tt.kind == lookup.KindRecipient {
			n, err := lookup.NormalizeRecipient(item)
			must(t, err)
			item = n
		}
		answers := c.Check(context.Background(), tt.kind, item)
		for i, a := range answers {
			if a.Result != tt.want[i] {
				t.Errorf("%s on %s: %v (%v), want %v", tt.item, a.List, a.Result, a.Err, tt.want[i])
			}
		}
	}

	for _, r := range c.SelfTest(context.Background()) {
		if r.Status != lookup.TestOK {
			t.Errorf("self-test of %s: %v %s", r.List, r.Status, r.Detail)
		}
	}
}

func TestFileListOpenErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.zone")
	writeFile(t, garbage, strings.Repeat("this is no zone\n", 20))
	for name, l := range map[string]config.List{
		"missing": {Name: "gone", Kind: "ip", File: filepath.Join(dir, "none"), Format: "ip4set"},
		"broken":  {Name: "garbage", Kind: "ip", File: garbage, Format: "ip4set"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := lookup.NewLists([]config.List{l})
			if err == nil || !strings.Contains(err.Error(), "list "+l.Name) {
				t.Fatalf("error %v, want one naming the list", err)
			}
		})
	}
}

func TestFileSourceRefusesOtherZones(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ip4.zone")
	writeFile(t, path, ip4File)
	s, err := lookup.NewFileSource(path, zonefile.IP4Set, "bl.test")
	must(t, err)
	r, err := s.LookupA(context.Background(), "66.2.0.192.other.test.")
	if err != nil || r.Rcode != 5 {
		t.Fatalf("got %+v, %v; want REFUSED", r, err)
	}
	r, err = s.LookupA(context.Background(), "66.2.0.192.BL.test")
	if err != nil || len(r.A) != 1 {
		t.Fatalf("got %+v, %v; want listed", r, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.LookupA(ctx, "66.2.0.192.bl.test."); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v with a cancelled context", err)
	}
}

// TestFileReload: a changed file is read again; a broken one keeps the
// data in use and is not read again until it changes.
func TestFileReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ip4.zone")
	writeFile(t, path, ip4File)
	s, err := lookup.NewFileSource(path, zonefile.IP4Set, "bl.test")
	must(t, err)
	listed := func(ip string) bool {
		t.Helper()
		r, err := s.LookupA(context.Background(), ip+".bl.test.")
		must(t, err)
		return len(r.A) > 0
	}
	reload := func() (bool, error) {
		t.Helper()
		return s.Reload()
	}

	if changed, err := reload(); changed || err != nil {
		t.Fatalf("unchanged file: %v, %v", changed, err)
	}

	writeFile(t, path, ":127.0.0.4:\n192.0.2.1\n")
	if changed, err := reload(); !changed || err != nil {
		t.Fatalf("changed file: %v, %v", changed, err)
	}
	if !listed("1.2.0.192") || listed("66.2.0.192") {
		t.Fatal("the new data is not in use")
	}

	// Broken: the old data stays.
	writeFile(t, path, strings.Repeat("garbage line\n", 50)+"192.0.2.99\n")
	_, err = reload()
	if !errors.Is(err, lookup.ErrBrokenFile) || !strings.Contains(err.Error(), "50 of 51 lines") {
		t.Fatalf("error %v, want a broken file", err)
	}
	if !listed("1.2.0.192") || listed("99.2.0.192") {
		t.Fatal("a broken file replaced the data")
	}
	if changed, err := reload(); changed || err != nil {
		t.Fatalf("the broken file was read again: %v, %v", changed, err)
	}

	// Gone: the old data stays.
	must(t, os.Remove(path))
	if _, err := reload(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("error %v, want not-exist", err)
	}
	if !listed("1.2.0.192") {
		t.Fatal("a missing file dropped the data")
	}

	// Repaired.
	writeFile(t, path, "192.0.2.2\n")
	if changed, err := reload(); !changed || err != nil {
		t.Fatalf("repaired file: %v, %v", changed, err)
	}
	if !listed("2.2.0.192") {
		t.Fatal("the repaired file is not in use")
	}
	if fi := s.Info(); fi.Stats.Entries != 1 || fi.Path != path || fi.Format != zonefile.IP4Set {
		t.Fatalf("info %+v", fi)
	}
}

// TestFileReloadWaitsForSettle: a file modified just now is read only when
// it is still the same at the next poll.
func TestFileReloadWaitsForSettle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ip4.zone")
	writeFile(t, path, ip4File)
	s, err := lookup.NewFileSource(path, zonefile.IP4Set, "bl.test")
	must(t, err)
	s.Settle = time.Hour
	must(t, os.WriteFile(path, []byte("192.0.2.1\n"), 0o644)) // modified now
	if changed, err := s.Reload(); changed || err != nil {
		t.Fatalf("first poll: %v, %v; want to wait", changed, err)
	}
	if changed, err := s.Reload(); !changed || err != nil {
		t.Fatalf("second poll, file unchanged: %v, %v; want it read", changed, err)
	}
}

func TestWatchFilesLogs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ip4.zone")
	writeFile(t, path, ip4File+"bad line\n")
	ls, err := lookup.NewLists([]config.List{{Name: "mirror", Kind: "ip", File: path,
		Format: "ip4set"}})
	must(t, err)
	core, logs := observer.New(zapcore.InfoLevel)
	c := lookup.NewChecker(ls, nil, zap.New(core))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		c.WatchFiles(ctx, 10*time.Millisecond)
		close(done)
	}()

	waitFor(t, func() bool { return logs.FilterMessage("list file loaded").Len() == 1 })
	if w := logs.FilterMessage("list file has lines that were skipped"); w.Len() != 1 ||
		w.All()[0].ContextMap()["invalid"] != int64(1) {
		t.Fatalf("skipped lines logged as %v", w.All())
	}

	writeFile(t, path, strings.Repeat("garbage\n", 30))
	waitFor(t, func() bool { return logs.FilterLevelExact(zapcore.ErrorLevel).Len() == 1 })
	time.Sleep(50 * time.Millisecond) // several more polls
	if n := logs.FilterLevelExact(zapcore.ErrorLevel).Len(); n != 1 {
		t.Fatalf("%d error lines for one broken file, want 1", n)
	}
	e := logs.FilterLevelExact(zapcore.ErrorLevel).All()[0]
	if e.ContextMap()["list"] != "mirror" {
		t.Fatalf("error line %v does not name the list", e.ContextMap())
	}

	writeFile(t, path, "192.0.2.1\n")
	waitFor(t, func() bool { return logs.FilterMessage("list file loaded").Len() == 2 })
	cancel()
	<-done
}

func writeBenchFile(b *testing.B, path string) {
	b.Helper()
	if err := os.WriteFile(path, []byte(ip4File), 0o644); err != nil {
		b.Fatal(err)
	}
}
