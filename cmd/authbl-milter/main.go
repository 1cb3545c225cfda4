// Command authbl-milter is a milter for Postfix and Sendmail that finds
// compromised mail accounts at submission time: it checks the client
// address and the recipients of every authenticated transaction against
// authbl-style DNS blocklists, flags the account on a hit, and rejects,
// quarantines or logs its mail until an operator releases it.
//
// Usage:
//
//	authbl-milter serve      [-config FILE]
//	authbl-milter check      [-config FILE] ITEM...
//	authbl-milter selftest   [-config FILE]
//	authbl-milter configtest [-config FILE]
//	authbl-milter accounts   list|show ACCOUNT|release ACCOUNT|flag ACCOUNT [-config FILE]
//	authbl-milter demo
//	authbl-milter version
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/authbl-milter/authbl-milter/config"
)

// Exit codes: check uses 1 for "listed", everything else 1 for a failed
// operation and 2 for an error in how it was called or configured.
const (
	exitOK    = 0
	exitFail  = 1
	exitError = 2
)

const usage = `usage: authbl-milter COMMAND [-config FILE] [ARGS]

commands:
  serve      [-config FILE]          run the milter (the default command)
  check      [-config FILE] ITEM...  look up IPs and addresses; exit 0 none
                                     listed, 1 some listed, 2 error
  selftest   [-config FILE]          run every list's test point
  configtest [-config FILE]          validate; print the effective config,
                                     secrets redacted
  accounts   list|show ACCOUNT|release ACCOUNT|flag ACCOUNT [-config FILE]
  demo                               a self-contained run, nothing installed
  version                            print the version

The default config file is ` + config.DefaultPath + `.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	case "version":
		fmt.Fprintln(stdout, versionString())
		return exitOK
	case "demo":
		return runDemo(stdout, stderr)
	}

	cmdFunc, ok := commands[cmd]
	if !ok {
		fmt.Fprintf(stderr, "authbl-milter: unknown command %q\n\n%s", cmd, usage)
		return exitError
	}
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", config.DefaultPath, "configuration file")
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitError
	}
	return cmdFunc(&env{configPath: *path, args: pos, stdout: stdout, stderr: stderr})
}

// env is what a command gets from the command line.
type env struct {
	configPath string
	args       []string
	stdout     io.Writer
	stderr     io.Writer
}

func (e *env) errorf(format string, args ...any) {
	fmt.Fprintf(e.stderr, "authbl-milter: "+format+"\n", args...)
}

var commands = map[string]func(*env) int{
	"serve":      cmdServe,
	"check":      cmdCheck,
	"selftest":   cmdSelftest,
	"configtest": cmdConfigtest,
	"accounts":   cmdAccounts,
}

// parseInterspersed parses flags that may stand before, between or after
// the positional arguments, so that "accounts release bob -config f"
// works as well as "accounts -config f release bob".
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// loadConfig loads the configuration or prints every problem with it.
func (e *env) loadConfig() (*config.Config, bool) {
	cfg, err := config.Load(e.configPath)
	if err != nil {
		e.errorf("%v", err)
		return nil, false
	}
	return cfg, true
}
