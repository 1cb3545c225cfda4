// Package integration holds the end-to-end tests of authbl-milter against
// a real Postfix, a real Sendmail, a real DNS blocklist server (rbldnsd)
// and the real authbl-milter binary.
//
// The tests sit behind the build tag "integration" and need root on
// Debian with the packages that setup.sh installs:
//
//	sudo integration/setup.sh
//	go test -tags integration -race -count=1 ./integration/...
//
// Everything runs on loopback: a private Postfix instance (its own
// config_directory, queue_directory, data_directory and maillog_file, every
// transport discard:) with Cyrus SASL on a sasldb of its own, one rbldnsd
// per test serving an IP list and a recipient list, and one authbl-milter
// per test with a generated config. Sendmail, whose packages conflict
// with Postfix, is unpacked by setup.sh into /opt/authbl-it/sendmail and
// runs in private mount and UTS namespaces (see sendmail_test.go).
// Without root or without the packages the tests skip, naming what is
// missing; with CI=true they fail instead.
// AUTHBL_IT_KEEP=1 keeps the work folder for a look after the run.
package integration
