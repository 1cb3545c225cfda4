package milter

import (
	"context"
	"net"
	"net/netip"
	"net/textproto"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	gomilter "github.com/emersion/go-milter"
	"go.uber.org/zap"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/lookup"
)

// session is the state of one MTA connection as the library hands it to
// us: it may be rebuilt between transactions (see the package comment),
// so nothing a transaction needs may live only here.
type session struct {
	srv *Server
	id  uint64      // the connection's number, "conn" in the log
	log *zap.Logger // with conn, built only when a line is written

	clientIP   netip.Addr // from the connect event, when the MTA sent one
	clientName string
	helo       string

	tx   *transaction
	live atomic.Pointer[transaction] // tx, for connClosed
}

// transaction is one authenticated MAIL FROM ... end-of-message sequence.
type transaction struct {
	opts *Options
	conn uint64      // the connection's number
	log  *zap.Logger // with conn and account, built only when a line is written

	ctx    context.Context // cancelled at abort; lookups derive from it
	cancel context.CancelFunc
	start  time.Time

	account    string
	authType   string
	clientIP   netip.Addr
	clientName string
	sender     string
	queueID    string

	ip       *pending[[]lookup.Answer]
	flag     *pending[*action.Flag]
	rcpts    []*rcptLookup
	seen     map[string]bool
	badRcpts []error // recipients that could not be normalised

	decided  bool
	verdict  action.Verdict
	inflight atomic.Bool // counted in the server's in-flight transactions
	addrErr  error       // the client address could not be known
}

type rcptLookup struct {
	addr    string
	answers *pending[[]lookup.Answer]
}

// pending is a value being computed in its own goroutine.
type pending[T any] struct {
	done chan struct{}
	val  T
	err  error
}

// settled is the done channel of every value that was known at once.
var settled = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// known returns a pending value that is already there.
func known[T any](v T) *pending[T] {
	return &pending[T]{done: settled, val: v}
}

func startPending[T any](f func() (T, error)) *pending[T] {
	p := &pending[T]{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.val, p.err = f()
	}()
	return p
}

// wait returns the value, or ok false when the deadline passes first.
func (p *pending[T]) wait(deadline <-chan time.Time) (T, error, bool) {
	select {
	case <-p.done:
		return p.val, p.err, true
	case <-deadline:
		var zero T
		return zero, nil, false
	}
}

func newSession(s *Server) *session {
	id := s.connID.Add(1)
	// WithLazy: most connections write no line of their own (the line of
	// each transaction is written with its fields, see logVerdict), and
	// building a logger's fields costs an encoder and its buffer.
	return &session{srv: s, id: id, log: s.Options().Log.WithLazy(zap.Uint64("conn", id))}
}

// Connect keeps the client address; nothing is decided here, because the
// login is known only at MAIL FROM.
func (s *session) Connect(host, family string, port uint16, addr net.IP,
	m *gomilter.Modifier) (gomilter.Response, error) {
	s.clientName = host
	if family == "tcp4" || family == "tcp6" {
		if ip, ok := netip.AddrFromSlice(addr); ok {
			s.clientIP = ip.Unmap()
		}
	}
	if ip, err := lookup.ParseClientAddr(m.Macros["{client_addr}"]); err == nil {
		s.clientIP = ip
	}
	return gomilter.RespContinue, nil
}

// Helo keeps the HELO name for notifications.
func (s *session) Helo(name string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.helo = name
	return gomilter.RespContinue, nil
}

// MailFrom starts a transaction: unauthenticated and exempt ones are
// accepted at once; for the others the client address lookup and the
// account store read start now, unless their answers are in memory.
func (s *session) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	s.endTransaction()
	opts := s.srv.Options()
	s.srv.authMacros.observe(s.log, m.Macros)

	account := strings.ToLower(strings.TrimSpace(m.Macros["{auth_authen}"]))
	if account == "" {
		s.log.Debug("not authenticated; accepted without lookups")
		opts.Observer.Transaction("unauthenticated")
		return gomilter.RespAccept, nil
	}
	if opts.Allow[account] {
		s.log.Info("account exempt; accepted without lookups", zap.String("account", account))
		opts.Observer.Transaction("exempt")
		return gomilter.RespAccept, nil
	}

	tx := &transaction{
		opts:       opts,
		conn:       s.id,
		start:      time.Now(),
		account:    account,
		authType:   m.Macros["{auth_type}"],
		clientIP:   s.clientIP,
		clientName: firstNonEmpty(m.Macros["{client_name}"], s.clientName),
		sender:     from,
		queueID:    m.Macros["i"],
		seen:       make(map[string]bool),
	}
	if a := m.Macros["{client_addr}"]; a != "" {
		ip, err := lookup.ParseClientAddr(a)
		switch {
		case err == nil:
			tx.clientIP = ip
		case s.clientIP.IsValid():
			// The connect event of this same connection is not stale.
			s.log.Warn("unusable {client_addr} macro; using the connect address",
				zap.String("client_ip", s.clientIP.String()), zap.Error(err))
		default:
			tx.addrErr = err
		}
	}
	tx.log = s.log.WithLazy(zap.String("account", account))
	tx.ctx, tx.cancel = context.WithCancel(lookup.WithLogger(context.Background(), tx.log))
	s.setTx(tx)

	switch {
	case tx.addrErr != nil:
		// Counted as a failed IP lookup, so that on_error applies.
	case !tx.clientIP.IsValid():
		s.log.Warn("client address unknown; the IP check is skipped" +
			" (the MTA sent no usable {client_addr})")
	case opts.Exempt.ClientExempt(tx.clientIP):
		tx.log.Debug("client network exempt from the IP check",
			zap.String("client_ip", tx.clientIP.String()))
	case opts.Checker.HasKind(lookup.KindIP):
		tx.ip = tx.check(lookup.KindIP, tx.clientIP.String())
	}
	if f, ok := opts.Accounts.Peek(account); ok {
		tx.flag = known(f)
	} else {
		tx.flag = startPending(func() (*action.Flag, error) {
			ctx, cancel := context.WithTimeout(tx.ctx, opts.Timeout)
			defer cancel()
			return opts.Accounts.Lookup(ctx, account)
		})
	}
	return gomilter.RespContinue, nil
}

// check starts the lookups of item on the lists of kind k. Answers held
// in memory (the cache, a local file) are taken at once; only a lookup
// that must ask a DNS server gets a goroutine, and milter.timeout.
func (tx *transaction) check(k lookup.Kind, item string) *pending[[]lookup.Answer] {
	lk := tx.opts.Checker.Start(k, item, tx.log)
	if lk.Ready() {
		return known(lk.Wait(tx.ctx))
	}
	return startPending(func() ([]lookup.Answer, error) {
		ctx, cancel := context.WithTimeout(tx.ctx, tx.opts.Timeout)
		defer cancel()
		return lk.Wait(ctx), nil
	})
}

// RcptTo starts the lookup of one recipient.
func (s *session) RcptTo(rcpt string, m *gomilter.Modifier) (gomilter.Response, error) {
	tx := s.tx
	if tx == nil {
		return gomilter.RespContinue, nil
	}
	tx.noteQueueID(m)

	addr, err := lookup.NormalizeRecipient(rcpt)
	if err != nil {
		tx.badRcpts = append(tx.badRcpts, err)
		tx.log.Warn("recipient not looked up", zap.Error(err))
		return gomilter.RespContinue, nil
	}
	if tx.seen[addr] {
		return gomilter.RespContinue, nil
	}
	tx.seen[addr] = true

	r := &rcptLookup{addr: addr}
	if tx.opts.Exempt.RecipientExempt(addr) {
		tx.log.Debug("recipient exempt", zap.String("recipient", addr))
	} else if tx.opts.Checker.HasKind(lookup.KindRecipient) {
		r.answers = tx.check(lookup.KindRecipient, addr)
	}
	tx.rcpts = append(tx.rcpts, r)
	return gomilter.RespContinue, nil
}

// Header is not asked for (OptNoHeaders); it only continues.
func (s *session) Header(name, value string, m *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

// Headers is the end of the envelope under protocol v2: decide now.
func (s *session) Headers(h textproto.MIMEHeader, m *gomilter.Modifier) (gomilter.Response, error) {
	tx := s.tx
	if tx == nil {
		return gomilter.RespAccept, nil
	}
	tx.noteQueueID(m)
	if !tx.decided { // an MTA may repeat end of headers
		s.decide()
	}
	return s.respond(false)
}

// BodyChunk is not asked for (OptNoBody); it only continues.
func (s *session) BodyChunk(chunk []byte, m *gomilter.Modifier) (gomilter.Response, error) {
	return gomilter.RespContinue, nil
}

// Body is the end of the message: the only place where a quarantine is
// allowed.
func (s *session) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	tx := s.tx
	if tx == nil {
		return gomilter.RespAccept, nil
	}
	tx.noteQueueID(m)
	if !tx.decided {
		s.decide() // an MTA that skipped end of headers
	}
	if tx.verdict.Outcome == action.Quarantine {
		if err := m.Quarantine(quarantineReason(tx)); err != nil {
			s.endTransaction()
			return nil, err
		}
	}
	return s.respond(true)
}

// Abort ends the transaction; the connection stays.
func (s *session) Abort(m *gomilter.Modifier) error {
	s.endTransaction()
	return nil
}

// setTx makes tx the current transaction.
func (s *session) setTx(tx *transaction) {
	s.tx = tx
	s.live.Store(tx)
}

// endTransaction cancels what the current transaction still has running.
func (s *session) endTransaction() {
	tx := s.tx
	if tx == nil {
		return
	}
	tx.cancel()
	s.release(tx)
	s.setTx(nil)
}

// connClosed ends the transaction of a connection that closed. It may run
// on another goroutine than the callbacks, so it touches only what is
// safe for that.
func (s *session) connClosed() {
	if tx := s.live.Load(); tx != nil {
		tx.cancel()
		s.release(tx)
	}
}

// hold counts tx among the transactions that shutdown waits for.
func (s *session) hold(tx *transaction) {
	if tx.inflight.CompareAndSwap(false, true) {
		s.srv.inflight.Add(1)
	}
}

func (s *session) release(tx *transaction) {
	if tx.inflight.CompareAndSwap(true, false) {
		s.srv.inflight.Add(-1)
	}
}

// respond turns the verdict into the MTA's answer. A quarantine waits for
// the end of the message; a reply-code answer keeps the library's handler,
// and the transaction is over either way.
func (s *session) respond(endOfMessage bool) (gomilter.Response, error) {
	tx := s.tx
	o := tx.verdict.Outcome
	if o == action.Quarantine && !endOfMessage {
		return gomilter.RespContinue, nil
	}
	s.endTransaction()
	switch o {
	case action.Reject:
		return gomilter.NewResponseStr('y', "550 "+tx.opts.RejectText), nil
	case action.Tempfail:
		return gomilter.NewResponseStr('y', tempfailText), nil
	default:
		return gomilter.RespAccept, nil
	}
}

// tempfailText is the reply when on_error = tempfail and a lookup or the
// account store failed: 4.4.3, a directory server failure (RFC 3463).
const tempfailText = "451 4.4.3 Temporary failure checking the sender; try again later"

func (tx *transaction) noteQueueID(m *gomilter.Modifier) {
	if q := m.Macros["i"]; q != "" && q != tx.queueID {
		tx.queueID = q
	}
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// authMacroWatch notices an MTA that does not send the SASL login at MAIL
// FROM: every session would then look unauthenticated, and the milter
// would check nothing without a word. Neither Postfix nor Sendmail sends
// an auth macro, not even an empty one, for a session that did not
// authenticate (seen), so one transaction without {auth_authen} proves
// nothing by itself. Two things do tell:
//
//   - {auth_type} without {auth_authen}: the session authenticated and
//     the login was left out. Certain.
//   - no macro at MAIL FROM, or one the milter did not ask for there:
//     the MTA ignores the milter's symbol list and sends its own, which
//     may lack {auth_authen} (Sendmail's confMILTER_MACROS_ENVFROM,
//     Postfix's milter_mail_macros). Suspect until a login arrives.
//
// An MTA that applies the symbol list (Postfix, Sendmail 8.17: seen)
// sends {auth_authen} whenever the session authenticated, whatever its
// own lists say, and its unauthenticated mail raises nothing. Each
// warning is given once per process.
type authMacroWatch struct {
	authenSeen    atomic.Bool // some MAIL FROM carried {auth_authen}
	warnedNoLogin atomic.Bool
	warnedOwnList atomic.Bool
}

// sendAuthenHint tells the operator where the MTA's MAIL FROM list is.
const sendAuthenHint = "make the MTA send {auth_authen} at MAIL FROM" +
	" (Sendmail: confMILTER_MACROS_ENVFROM; Postfix: milter_mail_macros)"

// observe looks at the macros of one MAIL FROM.
func (w *authMacroWatch) observe(log *zap.Logger, macros map[string]string) {
	if ce := log.Check(zap.DebugLevel, "macros at MAIL FROM"); ce != nil {
		ce.Write(zap.Strings("macros", macroNames(macros)))
	}
	if _, ok := macros["{auth_authen}"]; ok {
		if !w.authenSeen.Swap(true) && w.warnedOwnList.Load() {
			log.Info("the MTA does send the SASL login ({auth_authen});" +
				" the earlier warning about it does not apply")
		}
		return
	}

	if t := macros["{auth_type}"]; t != "" {
		if !w.warnedNoLogin.Swap(true) {
			log.Warn("the MTA reports an authenticated session but sends no SASL login"+
				" ({auth_authen}) at MAIL FROM: authbl-milter cannot check"+
				" authenticated mail and lets it through unchecked; "+sendAuthenHint,
				zap.String("auth_type", t), zap.Strings("macros", macroNames(macros)))
		}
		return
	}
	if w.authenSeen.Load() || !ownMailList(macros) {
		return
	}
	if !w.warnedOwnList.Swap(true) {
		log.Warn("no SASL login ({auth_authen}) received at MAIL FROM, and the MTA"+
			" sends its own macros there instead of those the milter asked for:"+
			" if its list lacks {auth_authen}, every session looks"+
			" unauthenticated and authbl-milter checks nothing; "+sendAuthenHint,
			zap.Strings("macros", macroNames(macros)))
	}
}

// ownMailList reports whether the MAIL FROM macros are not those the
// milter asked for through the symbol list: none at all, or one it did
// not ask for.
func ownMailList(macros map[string]string) bool {
	if len(macros) == 0 {
		return true
	}
	for name := range macros {
		if !slices.Contains(symList[gomilter.StageMailFrom], name) {
			return true
		}
	}
	return false
}

// macroNames returns the names of macros, sorted, for a log line.
func macroNames(macros map[string]string) []string {
	names := make([]string, 0, len(macros))
	for name := range macros {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
