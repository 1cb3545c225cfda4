// Package milter is authbl-milter's side of the milter protocol: the
// session that Postfix or Sendmail drives through each SMTP transaction.
//
// The protocol library (github.com/emersion/go-milter) stays behind this
// package. It negotiates protocol version 2, replaces the macro map at
// every stage, and builds a fresh handler after any answer other than
// continue. So a session keeps what it needs in its own state and asks,
// through the symbol list, for the client address and the SASL macros at
// MAIL FROM, which makes every transaction stand on its own, the second
// one on a connection included.
//
// A transaction without {auth_authen} is not authenticated: it is
// accepted at MAIL FROM without any lookup. For an authenticated one, the
// client address lookup starts at MAIL FROM and each recipient's lookup
// at its RCPT TO; end of headers, the first event after the last RCPT
// under protocol v2 when no headers are asked for, waits for them within
// the transaction's time budget and applies the verdict.
package milter

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	gomilter "github.com/emersion/go-milter"
	"go.uber.org/zap"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/config"
	"github.com/authbl-milter/authbl-milter/lookup"
)

// Options is what a session needs. A Server's options can be replaced
// while it runs; each transaction uses the options current at its MAIL
// FROM.
type Options struct {
	Checker  *lookup.Checker
	Accounts *action.Accounts
	Policy   action.Policy
	// RejectText follows "550 " in the reply to a rejected transaction.
	RejectText string
	// Timeout bounds the lookups of one transaction.
	Timeout time.Duration
	// Allow lists accounts (lowercase) that are never checked.
	Allow map[string]bool
	// Exempt lists client networks exempt from the IP check and
	// recipients never looked up.
	Exempt config.Exempt
	// Log receives the session's log lines.
	Log *zap.Logger
	// Observer, when set, counts outcomes (for metrics).
	Observer Observer
	// OnDetection, when set, is called in its own goroutine for each
	// transaction from a compromised account, after the answer is known.
	OnDetection func(Detection)
}

// Observer is told the outcome of every transaction. Its methods must be
// quick and safe for concurrent use.
type Observer interface {
	// Transaction reports an outcome: unauthenticated, exempt, accept,
	// reject, quarantine or tempfail.
	Transaction(outcome string)
	// Detection reports a transaction from a compromised account, with
	// the reason, whether it was the account's first detection, and the
	// configured action.
	Detection(reason string, isNew bool, action string)
}

type nopObserver struct{}

func (nopObserver) Transaction(string)             {}
func (nopObserver) Detection(string, bool, string) {}

// Detection describes a transaction from a compromised account.
type Detection struct {
	Account    string
	ClientIP   string
	ClientName string
	Helo       string
	Sender     string
	Recipients []string
	QueueID    string
	AuthType   string
	Verdict    action.Verdict
	New        bool // the account's first detection
	Time       time.Time
}

// Server serves milter connections.
type Server struct {
	opts   atomic.Pointer[Options]
	connID atomic.Uint64

	mu        sync.Mutex
	listeners []net.Listener
	conns     map[*conn]struct{}
	// inflight counts transactions being decided, or decided and waiting
	// for the end of the message to be quarantined: those whose answer
	// shutdown waits for.
	inflight atomic.Int64
	closing  atomic.Bool
	// authMacros warns when the MTA sends no SASL login (session.go).
	authMacros authMacroWatch
}

// NewServer returns a server with the given options.
func NewServer(o Options) *Server {
	s := &Server{conns: make(map[*conn]struct{})}
	s.SetOptions(o)
	return s
}

// symList asks for the macros each stage needs. MAIL FROM gets the client
// address again so that each transaction stands on its own, whatever the
// MTA did before; Sendmail uses an end-of-message list only when an
// end-of-headers list is asked for too.
var symList = map[gomilter.Stage][]string{
	gomilter.StageConnect:  {"{client_addr}", "{client_name}", "j"},
	gomilter.StageHelo:     {"{client_addr}"},
	gomilter.StageMailFrom: {"{auth_authen}", "{auth_type}", "{client_addr}", "{client_name}", "i"},
	gomilter.StageRcptTo:   {"i", "{rcpt_addr}"},
	gomilter.StageEOH:      {"i"},
	gomilter.StageEOM:      {"i"},
}

// SetOptions replaces the options for transactions that start from now.
func (s *Server) SetOptions(o Options) {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Observer == nil {
		o.Observer = nopObserver{}
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	s.opts.Store(&o)
}

// Options returns the current options.
func (s *Server) Options() *Options { return s.opts.Load() }

// Serve accepts milter connections on ln until Close or Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners = append(s.listeners, ln)
	s.mu.Unlock()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// Out of file descriptors and the like: wait, as
				// net/http does, rather than spin or give up.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.Options().Log.Warn("accept failed; retrying", zap.Error(err),
					zap.Duration("backoff", backoff))
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.serveConn(c)
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// ErrServerClosed is returned by Serve after Close or Shutdown.
var ErrServerClosed = errors.New("milter: server closed")

// Close stops accepting and closes every connection at once.
func (s *Server) Close() error {
	err := s.closeListeners()
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	return err
}

// closeListeners stops accepting.
func (s *Server) closeListeners() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closing.Store(true)
	var first error
	for _, ln := range s.listeners {
		if err := ln.Close(); err != nil && first == nil && !errors.Is(err, net.ErrClosed) {
			first = err
		}
	}
	s.listeners = nil
	return first
}

// Shutdown stops accepting connections, waits until the transactions
// being decided have their answers or ctx is done, then closes every
// connection.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeListeners()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var err error
	for s.inflight.Load() > 0 && err == nil {
		select {
		case <-tick.C:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	s.Close()
	return err
}
