package milter

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/config"
	"github.com/authbl-milter/authbl-milter/lookup"
	"github.com/authbl-milter/authbl-milter/lookup/zoneserver"
)

// BenchmarkSessionTransaction measures the milter's own work for one
// clean authenticated transaction with three recipients, warm caches and
// a SQLite store opened as serve opens it, without the protocol: the callbacks go-milter would
// make, called directly. The logger encodes JSON and throws it away, as
// the info level of a real log would cost.
func BenchmarkSessionTransaction(b *testing.B) {
	z := zoneserver.New()
	for _, err := range []error{
		z.AddIP("authbl.bench.test", "192.0.2.66", "127.0.0.4"),
		z.AddRecipient("authbl-rcpt.bench.test", "dropbox@example.net", "127.0.0.2"),
		z.Start("127.0.0.1:0"),
	} {
		if err != nil {
			b.Fatal(err)
		}
	}
	defer z.Close()
	lists, err := lookup.NewLists([]config.List{
		{Name: "authbl", Kind: "ip", Zone: "authbl.bench.test"},
		{Name: "authbl-rcpt", Kind: "recipient", Zone: "authbl-rcpt.bench.test"},
	})
	if err != nil {
		b.Fatal(err)
	}
	dns, err := lookup.NewDNSClient([]string{z.Addr()}, 2*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	cache := lookup.NewCache(dns, lookup.CacheOptions{Size: 1000, MinTTL: time.Hour, MaxTTL: time.Hour})
	store, err := action.OpenSQLite(filepath.Join(b.TempDir(), "accounts.db"),
		action.SQLiteOptions{ChangeCheck: action.SQLiteChangeCheck}) // as serve opens it
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.AddSync(io.Discard), zapcore.InfoLevel))
	srv := NewServer(Options{
		Checker:    lookup.NewChecker(lists, cache, log),
		Accounts:   action.NewAccounts(store, action.AccountsOptions{Log: log}),
		Policy:     action.Policy{Mode: action.ModeReject},
		RejectText: "5.7.1 no",
		Timeout:    5 * time.Second,
		Log:        log,
	})

	rcpts := []string{"<a@example.com>", "<b@example.com>", "<c@example.com>"}
	mail := &gomilter.Modifier{Macros: map[string]string{
		"{auth_authen}": "user@example.com", "{auth_type}": "PLAIN",
		"{client_addr}": "192.0.2.10", "i": "4ABCDEF"}}
	rcpt := &gomilter.Modifier{Macros: map[string]string{"i": "4ABCDEF"}}
	run := func() {
		s := newSession(srv)
		s.Connect("client.example.com", "tcp4", 25, net.IPv4(192, 0, 2, 10), mail)
		s.Helo("client.example.com", rcpt)
		s.MailFrom("<user@example.com>", mail)
		for _, r := range rcpts {
			s.RcptTo(r, rcpt)
		}
		resp, _ := s.Headers(nil, rcpt)
		if resp != gomilter.RespAccept {
			panic(fmt.Sprintf("answer %v, want accept", resp))
		}
	}
	run() // fill the cache
	b.ReportAllocs()
	cpu := processCPU(b)
	for b.Loop() {
		run()
	}
	b.StopTimer()
	// Wall time per transaction hides the goroutines' work, which runs
	// beside the callbacks; the process's CPU time counts it.
	b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N), "cpu-ns/op")
	if st := cache.Stats(); st.Misses != 4 {
		b.Fatalf("cache misses %d, want 4 (the first transaction's)", st.Misses)
	}
}

// processCPU returns the CPU time the process has used, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
