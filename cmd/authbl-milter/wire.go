package main

import (
	"fmt"
	"strings"

	"go.uber.org/zap"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/config"
	"github.com/authbl-milter/authbl-milter/lookup"
	"github.com/authbl-milter/authbl-milter/milter"
)

// newChecker builds the lists and the DNS client of cfg.
func newChecker(cfg *config.Config, log *zap.Logger) (*lookup.Checker, error) {
	lists, err := lookup.NewLists(cfg.Lists)
	if err != nil {
		return nil, err
	}
	dns, err := lookup.NewDNSClient(cfg.DNS.Servers, cfg.DNS.Timeout.Duration)
	if err != nil {
		return nil, err
	}
	return lookup.NewChecker(lists, dns, log), nil
}

// openStore opens the account store of cfg.
func openStore(cfg *config.Config) (action.Store, error) {
	switch cfg.Accounts.Backend {
	case "sqlite":
		return action.OpenSQLite(cfg.Accounts.Path, action.SQLiteOptions{})
	default:
		// TODO: the redis backend, for accounts shared by several MTAs,
		// is not built yet; configs that ask for it are refused here.
		return nil, fmt.Errorf("accounts.backend %q is not supported by this build",
			cfg.Accounts.Backend)
	}
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
