package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"go.uber.org/zap"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/config"
	"github.com/authbl-milter/authbl-milter/lookup"
)

// cmdCheck looks items up in every list of their kind and prints one line
// per item and list: item, list, result, answer codes.
func cmdCheck(e *env) int {
	if len(e.args) == 0 {
		e.errorf("check needs at least one IP address or email address")
		return exitError
	}
	cfg, checker, ok := e.checker()
	if !ok {
		return exitError
	}

	code := exitOK
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	for _, item := range e.args {
		kind, key, err := classifyItem(item)
		if err != nil {
			e.errorf("%v", err)
			code = exitError
			continue
		}
		if !checker.HasKind(kind) {
			fmt.Fprintf(tw, "%s\t-\tno %s lists configured\t-\n", item, kind)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), cfg.Milter.Timeout.Duration)
		answers := checker.Check(ctx, kind, key)
		cancel()
		for _, a := range answers {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s", item, a.List, a.Result, a.CodesString())
			if a.Err != nil {
				fmt.Fprintf(tw, "\t%v", a.Err)
			}
			fmt.Fprintln(tw)
			switch {
			case a.Result == lookup.Error:
				code = exitError
			case a.Result == lookup.Listed && code == exitOK:
				code = exitFail
			}
		}
	}
	return code
}

// checker loads the configuration and builds its lists, printing what
// went wrong.
func (e *env) checker() (*config.Config, *lookup.Checker, bool) {
	cfg, ok := e.loadConfig()
	if !ok {
		return nil, nil, false
	}
	checker, err := newChecker(cfg, zap.NewNop())
	if err != nil {
		e.errorf("%v", err)
		return nil, nil, false
	}
	return cfg, checker, true
}

// classifyItem tells an IP address from an email address.
func classifyItem(item string) (lookup.Kind, string, error) {
	if ip, err := lookup.ParseClientAddr(item); err == nil {
		return lookup.KindIP, ip.String(), nil
	}
	if strings.Contains(item, "@") {
		n, err := lookup.NormalizeRecipient(item)
		return lookup.KindRecipient, n, err
	}
	return 0, "", fmt.Errorf("%q is neither an IP address nor an email address", item)
}

// cmdSelftest runs every list's self-test and prints one line per list.
func cmdSelftest(e *env) int {
	_, checker, ok := e.checker()
	if !ok {
		return exitError
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	code := exitOK
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	for _, r := range checker.SelfTest(ctx) {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.List, r.Status, r.Detail)
		if r.Status != lookup.TestOK {
			code = exitFail
		}
	}
	return code
}

// cmdConfigtest validates the configuration and prints it, secrets
// redacted.
func cmdConfigtest(e *env) int {
	cfg, ok := e.loadConfig()
	if !ok {
		return exitError
	}
	if err := cfg.WriteTOML(e.stdout); err != nil {
		e.errorf("%v", err)
		return exitFail
	}
	fmt.Fprintf(e.stderr, "authbl-milter: %s: configuration OK\n", e.configPath)
	return exitOK
}

// cmdAccounts lists, shows, releases and flags accounts in the store. It
// works while the milter runs: the store is shared.
func cmdAccounts(e *env) int {
	if len(e.args) == 0 {
		e.errorf("accounts needs a subcommand: list, show ACCOUNT, release ACCOUNT, flag ACCOUNT")
		return exitError
	}
	sub, args := e.args[0], e.args[1:]
	want := 1
	if sub == "list" {
		want = 0
	}
	switch sub {
	case "list", "show", "release", "flag":
	default:
		e.errorf("unknown accounts subcommand %q", sub)
		return exitError
	}
	if len(args) != want {
		e.errorf("accounts %s takes %d argument(s)", sub, want)
		return exitError
	}
	cfg, ok := e.loadConfig()
	if !ok {
		return exitError
	}
	store, err := openStore(cfg, forCommand)
	if err != nil {
		e.errorf("%v", err)
		return exitFail
	}
	defer store.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	switch sub {
	case "list":
		return accountsList(ctx, e, store)
	case "show":
		return accountsShow(ctx, e, store, args[0])
	case "release":
		if err := store.Release(ctx, args[0]); err != nil {
			e.errorf("release %s: %v", args[0], err)
			return exitFail
		}
		untilSeen(cfg)
		fmt.Fprintf(e.stdout, "released %s\n", strings.ToLower(args[0]))
		return exitOK
	default: // flag
		accounts := action.NewAccounts(store, action.AccountsOptions{TTL: cfg.Accounts.TTL.Duration})
		isNew, err := accounts.Record(ctx, action.Flag{Account: args[0], Reason: "manual"})
		if err != nil {
			e.errorf("flag %s: %v", args[0], err)
			return exitFail
		}
		if !isNew {
			fmt.Fprintf(e.stdout, "%s was already flagged\n", strings.ToLower(args[0]))
			return exitOK
		}
		untilSeen(cfg)
		fmt.Fprintf(e.stdout, "flagged %s\n", strings.ToLower(args[0]))
		return exitOK
	}
}

// untilSeen waits, after a release or a new flag, until a milter running
// on the same SQLite file has seen the change: it keeps what it read in
// memory and looks for other processes' changes every
// action.SQLiteChangeCheck. When the command returns, the change counts.
// Redis has no such delay.
func untilSeen(cfg *config.Config) {
	if cfg.Accounts.Backend == config.BackendSQLite {
		time.Sleep(action.SQLiteChangeCheck + action.SQLiteChangeCheck/2)
	}
}

func accountsList(ctx context.Context, e *env, store action.Store) int {
	flags, err := store.List(ctx)
	if err != nil {
		e.errorf("list: %v", err)
		return exitFail
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	for _, f := range flags {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", dash(f.Account), f.Reason,
			dash(f.List), dash(f.ClientIP), dash(f.Recipient),
			f.FlaggedAt.UTC().Format(time.RFC3339), f.Hits)
	}
	return exitOK
}

func accountsShow(ctx context.Context, e *env, store action.Store, account string) int {
	f, err := store.Get(ctx, account)
	if errors.Is(err, action.ErrNotFound) {
		e.errorf("%s is not flagged", strings.ToLower(account))
		return exitFail
	}
	if err != nil {
		e.errorf("show %s: %v", account, err)
		return exitFail
	}
	expires := "never (until released)"
	if !f.ExpiresAt.IsZero() {
		expires = f.ExpiresAt.UTC().Format(time.RFC3339)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 1, ' ', 0)
	defer tw.Flush()
	for _, kv := range [][2]string{
		{"account", dash(f.Account)}, {"reason", f.Reason}, {"list", dash(f.List)},
		{"client_ip", dash(f.ClientIP)}, {"recipient", dash(f.Recipient)},
		{"queue_id", dash(f.QueueID)},
		{"flagged_at", f.FlaggedAt.UTC().Format(time.RFC3339)},
		{"last_seen", f.LastSeen.UTC().Format(time.RFC3339)},
		{"hits", fmt.Sprint(f.Hits)}, {"expires", expires},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
	}
	return exitOK
}

// dash prints a stored value for people: "-" when empty, and quoted when
// it holds anything but printable characters, since logins and recipients
// come from SMTP clients and could otherwise forge lines of the output.
func dash(s string) string {
	switch {
	case s == "":
		return "-"
	case strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) || r == ' ' }):
		return strconv.Quote(s)
	}
	return s
}
