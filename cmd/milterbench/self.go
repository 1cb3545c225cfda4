package main

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/config"
	"github.com/authbl-milter/authbl-milter/lookup"
	"github.com/authbl-milter/authbl-milter/lookup/zoneserver"
	"github.com/authbl-milter/authbl-milter/milter"
)

// The zones of -self: an authbl-like IP list (listed on 127.0.0.4) and an
// authbl-rcpt-like recipient list.
const (
	selfIPZone   = "authbl.bench.test"
	selfRcptZone = "authbl-rcpt.bench.test"
)

// self is authbl-milter running in this process, as serve would run it,
// with a zone server for its lists and a SQLite store in a temporary
// directory; everything on loopback.
type self struct {
	addr  string
	zones *zoneserver.Server
	srv   *milter.Server
	store action.Store
	dir   string
	logf  *os.File

	undoStdLog func()
}

func startSelf(o *options) (*self, error) {
	s := &self{zones: zoneserver.New()}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	for _, err := range []error{
		s.zones.AddIP(selfIPZone, "127.0.0.2", "127.0.0.4"),
		s.zones.AddIP(selfIPZone, o.listedIP, "127.0.0.4"),
		s.zones.AddRecipient(selfRcptZone, "dropbox@evil.bench.test", "127.0.0.2"),
		s.zones.Start("127.0.0.1:0"),
	} {
		if err != nil {
			return nil, err
		}
	}
	s.zones.SetDelay(o.delay)

	lists, err := lookup.NewLists([]config.List{
		{Name: "authbl", Kind: "ip", Zone: selfIPZone,
			MatchPrefixes: []netip.Prefix{netip.MustParsePrefix("127.0.0.4/32")}},
		{Name: "authbl-rcpt", Kind: "recipient", Zone: selfRcptZone,
			MatchPrefixes: config.DefaultMatchPrefixes()},
	})
	if err != nil {
		return nil, err
	}
	dns, err := lookup.NewDNSClientOptions(lookup.DNSOptions{Servers: []string{s.zones.Addr()},
		Timeout: 2 * time.Second, Attempts: 2})
	if err != nil {
		return nil, err
	}
	var resolver lookup.Resolver = dns
	if o.cache > 0 {
		d := config.Default().DNS
		resolver = lookup.NewCache(dns, lookup.CacheOptions{Size: o.cache,
			MinTTL: d.CacheMinTTL.Duration, MaxTTL: d.CacheMaxTTL.Duration})
	}

	if s.dir, err = os.MkdirTemp("", "milterbench-"); err != nil {
		return nil, err
	}
	switch o.store {
	case "sqlite":
		s.store, err = action.OpenSQLite(filepath.Join(s.dir, "accounts.db"),
			action.SQLiteOptions{ChangeCheck: action.SQLiteChangeCheck}) // as serve opens it
		if err != nil {
			return nil, err
		}
	case "memory":
		s.store = newMemStore()
	default:
		return nil, fmt.Errorf("-store %q: want sqlite or memory", o.store)
	}
	log, err := s.logger(o.logTo)
	if err != nil {
		return nil, err
	}
	s.undoStdLog = zap.RedirectStdLog(log.Named("go-milter")) // as serve does
	checker := lookup.NewChecker(lists, resolver, log)
	s.srv = milter.NewServer(milter.Options{
		Checker:    checker,
		Accounts:   action.NewAccounts(s.store, action.AccountsOptions{Log: log}),
		Policy:     action.Policy{Mode: action.ModeReject},
		RejectText: config.DefaultRejectText,
		Timeout:    o.mtimeout,
		Log:        log,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.addr = ln.Addr().String()
	go s.srv.Serve(ln)
	ok = true
	return s, nil
}

// logger returns the JSON logger serve uses, at info, writing to w.
func (s *self) logger(to string) (*zap.Logger, error) {
	var w io.Writer
	switch to {
	case "discard":
		w = io.Discard
	case "stderr":
		w = os.Stderr
	default:
		f, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("-log: %w", err)
		}
		s.logf, w = f, f
	}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), zapcore.InfoLevel)), nil
}

func (s *self) close() {
	if s.srv != nil {
		s.srv.Close()
	}
	if s.store != nil {
		s.store.Close()
	}
	if s.zones != nil {
		s.zones.Close()
	}
	if s.undoStdLog != nil {
		s.undoStdLog()
	}
	if s.logf != nil {
		s.logf.Close()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}
