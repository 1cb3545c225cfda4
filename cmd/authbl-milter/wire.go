package main

import (
	"fmt"
	"strings"

	"go.uber.org/zap"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/config"
	"github.com/authbl-milter/authbl-milter/lookup"
	"github.com/authbl-milter/authbl-milter/milter"
	"github.com/authbl-milter/authbl-milter/notify"
)

// newChecker builds the lists of cfg (reading those served from files),
// and the DNS client with its cache for the others.
func newChecker(cfg *config.Config, log *zap.Logger) (*lookup.Checker, error) {
	lists, err := lookup.NewLists(cfg.Lists)
	if err != nil {
		return nil, err
	}
	needDNS := false
	for _, l := range lists {
		needDNS = needDNS || l.File == ""
	}
	if !needDNS {
		return lookup.NewChecker(lists, nil, log), nil
	}
	dns, err := lookup.NewDNSClientOptions(lookup.DNSOptions{
		Servers:  cfg.DNS.Servers,
		Timeout:  cfg.DNS.Timeout.Duration,
		Attempts: cfg.DNS.Attempts,
	})
	if err != nil {
		return nil, err
	}
	var r lookup.Resolver = dns
	if cfg.DNS.CacheSize > 0 {
		r = lookup.NewCache(dns, lookup.CacheOptions{
			Size:   cfg.DNS.CacheSize,
			MinTTL: cfg.DNS.CacheMinTTL.Duration,
			MaxTTL: cfg.DNS.CacheMaxTTL.Duration,
		})
	}
	return lookup.NewChecker(lists, r, log), nil
}

// storeUse says who opens the account store: a daemon keeps what it
// reads from SQLite in memory and checks the file for other processes'
// changes every action.SQLiteChangeCheck; a command reads the file every
// time.
type storeUse int

const (
	forCommand storeUse = iota
	forDaemon
)

// openStore opens the account store of cfg.
func openStore(cfg *config.Config, use storeUse) (action.Store, error) {
	switch cfg.Accounts.Backend {
	case config.BackendSQLite:
		var o action.SQLiteOptions
		if use == forDaemon {
			o.ChangeCheck = action.SQLiteChangeCheck
		}
		return action.OpenSQLite(cfg.Accounts.Path, o)
	case config.BackendRedis:
		return action.OpenRedis(cfg.Accounts.RedisURL,
			action.RedisOptions{Prefix: cfg.Accounts.RedisPrefix})
	default:
		return nil, fmt.Errorf("accounts.backend %q is not supported by this build",
			cfg.Accounts.Backend)
	}
}

// newNotifier builds the notifications of cfg; webhook notifications
// wait in the store's outbox when it has one.
func newNotifier(cfg *config.Config, store action.Store, log *zap.Logger) *notify.Notifier {
	o := notify.Options{
		Command:       cfg.Notify.Command,
		Webhooks:      cfg.Notify.Webhook,
		WebhookSecret: cfg.Notify.WebhookSecret,
		Timeout:       cfg.Notify.Timeout.Duration,
		Log:           log.Named("notify"),
	}
	if s, ok := store.(action.OutboxStore); ok {
		o.Outbox = s.Outbox()
	}
	return notify.New(o)
}

// milterOptions turns cfg into the milter's options.
func milterOptions(cfg *config.Config, checker *lookup.Checker, accounts *action.Accounts,
	log *zap.Logger) milter.Options {
	allow := make(map[string]bool, len(cfg.Accounts.Allow))
	for _, a := range cfg.Accounts.Allow {
		allow[strings.ToLower(a)] = true
	}
	return milter.Options{
		Checker:  checker,
		Accounts: accounts,
		Policy: action.Policy{
			Mode:            action.Mode(cfg.Action.Mode),
			TempfailOnError: cfg.Milter.OnError == "tempfail",
		},
		RejectText: cfg.Action.RejectText,
		Timeout:    cfg.Milter.Timeout.Duration,
		Allow:      allow,
		Exempt:     cfg.Exempt,
		Log:        log,
	}
}
