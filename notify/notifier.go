// Package notify announces new detections: it runs the operator's report
// command and posts a JSON document to each webhook, in the background,
// so that the milter's answer never waits for them.
//
// Only an account's first detection is announced (milter.Detection.New);
// its later mail is rejected, held or logged without a word here.
//
// The report command runs without a shell, with the facts in its
// environment only, under AUTHBL_* names and under the names the original
// Postfix policy daemon gave its scripts (sasl_username, client_address,
// ...). The facts come from the SMTP client, so control characters are
// stripped; a script must still quote them ("$AUTHBL_RECIPIENT"), as
// examples/report.sh does. At most MaxCommands run at once, each killed
// with its process group at the timeout; its exit status and output are
// logged.
//
// A webhook notification is written to the outbox of the account store
// (a table in SQLite, a hash and a sorted set in Redis) before it is
// sent, and removed once a receiver answered 2xx. A failed attempt is
// retried with exponential backoff; one still undelivered when the
// process stops is sent by the next process on the same store. When the
// store cannot take it, it waits in memory and is lost with the process.
package notify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net/url"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/milter"
)

// Defaults of Options.
const (
	DefaultTimeout      = 10 * time.Second
	DefaultMaxCommands  = 4
	DefaultQueue        = 256
	DefaultMaxDelivery  = 4
	DefaultPollInterval = 10 * time.Second
	DefaultMaxAttempts  = 30
)

// DefaultBackoff is the pause after the nth failed webhook attempt: 1 s,
// doubled each time, at most 10 minutes. With DefaultMaxAttempts a
// notification is given up after about three and a half hours.
func DefaultBackoff(n int) time.Duration {
	d := time.Second
	for i := 1; i < n && d < 10*time.Minute; i++ {
		d *= 2
	}
	return min(d, 10*time.Minute)
}

// Options configures New. Only Log may be left out of a working setup;
// every limit has a default.
type Options struct {
	Command       []string      // argv of the report command; empty: none
	Webhooks      []string      // URLs; empty: none
	WebhookSecret string        // signs the body when set
	Timeout       time.Duration // one command run, one webhook request
	// Outbox keeps webhook notifications until delivered; nil keeps
	// them in memory only.
	Outbox action.Outbox
	Host   string // the "host" fact; "": os.Hostname
	Log    *zap.Logger

	MaxCommands  int                     // commands running at once
	Queue        int                     // commands waiting to run, beyond which they are dropped
	MaxDelivery  int                     // webhook requests at once
	PollInterval time.Duration           // how often the outbox is looked at
	MaxAttempts  int                     // webhook attempts before giving up
	Backoff      func(int) time.Duration // pause after the nth failure
	Now          func() time.Time
}

// Notifier runs the notifications of new detections. Notify queues them;
// Run carries them out until its context ends.
type Notifier struct {
	o       Options
	log     *zap.Logger
	command *commandRunner
	hook    *webhook
	persist action.Outbox     // nil: none
	mem     *action.MemOutbox // what persist could not take
	targets map[string]bool   // the configured webhooks

	queue chan Event    // events for the command
	kick  chan struct{} // a webhook entry is due now

	mu        sync.Mutex
	scheduled map[string]time.Time // id -> due, of retries this process scheduled
	inflight  sync.WaitGroup
	stats     Stats
}

// Stats counts what a Notifier did, for tests and metrics.
type Stats struct {
	Events            int // new detections notified
	CommandsRun       int
	CommandsFailed    int // non-zero exit, timeout or failure to start
	CommandsDropped   int // queue full or shut down before their turn
	WebhooksQueued    int // notifications added to an outbox
	WebhooksDelivered int
	WebhooksFailed    int // failed attempts
	WebhooksAbandoned int // given up
}

// New returns a notifier; nothing runs before Run.
func New(o Options) *Notifier {
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxCommands <= 0 {
		o.MaxCommands = DefaultMaxCommands
	}
	if o.Queue <= 0 {
		o.Queue = DefaultQueue
	}
	if o.MaxDelivery <= 0 {
		o.MaxDelivery = DefaultMaxDelivery
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.Backoff == nil {
		o.Backoff = DefaultBackoff
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Host == "" {
		o.Host, _ = os.Hostname()
	}
	n := &Notifier{
		o:       o,
		log:     o.Log,
		persist: o.Outbox,
		mem:     action.NewMemOutbox(),
		targets: make(map[string]bool),
		queue:   make(chan Event, o.Queue),
		kick:    make(chan struct{}, 1),

		scheduled: make(map[string]time.Time),
	}
	if len(o.Command) > 0 {
		path := os.Getenv("PATH")
		if path == "" {
			path = DefaultPath
		}
		n.command = &commandRunner{argv: o.Command, path: path, timeout: o.Timeout, log: o.Log}
	}
	if len(o.Webhooks) > 0 {
		n.hook = newWebhook(o.WebhookSecret, o.Timeout)
	}
	for _, u := range o.Webhooks {
		n.targets[u] = true
	}
	return n
}

// Enabled reports whether there is anything to notify.
func (n *Notifier) Enabled() bool { return n.command != nil || n.hook != nil }

// OnDetection is the milter's OnDetection: it notifies new detections
// and ignores the others.
func (n *Notifier) OnDetection(d milter.Detection) {
	if !d.New {
		return
	}
	n.Notify(EventOf(d, n.o.Host))
}

// Notify queues the command for e and writes its webhook notifications
// to the outbox. It waits for the outbox (at most the timeout), never
// for a command or a delivery.
func (n *Notifier) Notify(e Event) {
	if !n.Enabled() {
		return
	}
	e = e.clean()
	n.count(func(s *Stats) { s.Events++ })

	if n.command != nil {
		select {
		case n.queue <- e:
		default:
			n.count(func(s *Stats) { s.CommandsDropped++ })
			n.log.Error("report command not run: too many waiting",
				zap.String("account", e.Account), zap.Int("waiting", cap(n.queue)))
		}
	}
	if n.hook != nil {
		n.enqueueWebhooks(e)
	}
}

func (n *Notifier) enqueueWebhooks(e Event) {
	body := e.JSON()
	now := n.o.Now()
	for _, target := range n.o.Webhooks {
		entry := action.OutboxEntry{ID: newID(), Target: target, Body: body,
			Due: now, Created: now}
		if n.persist != nil {
			ctx, cancel := context.WithTimeout(context.Background(), n.o.Timeout)
			err := n.persist.Add(ctx, entry)
			cancel()
			if err == nil {
				n.count(func(s *Stats) { s.WebhooksQueued++ })
				continue
			}
			n.log.Warn("webhook notification not written to the account store;"+
				" kept in memory only", zap.String("account", e.Account),
				zap.String("id", entry.ID), zap.Error(err))
		}
		n.mem.Add(context.Background(), entry)
		n.count(func(s *Stats) { s.WebhooksQueued++ })
	}
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// Run carries out notifications until ctx ends: it runs the command for
// queued events, and delivers the outbox's due entries, those left by an
// earlier process first. When ctx ends it lets running commands finish
// (each within its timeout), stops deliveries, which stay in the outbox,
// and returns.
func (n *Notifier) Run(ctx context.Context) {
	var wg sync.WaitGroup
	if n.command != nil {
		for range n.o.MaxCommands {
			wg.Go(func() { n.commandWorker(ctx) })
		}
	}
	if n.hook != nil {
		wg.Go(func() { n.dispatch(ctx) })
	}
	wg.Wait()

	if k := len(n.queue); k > 0 {
		n.count(func(s *Stats) { s.CommandsDropped += k })
		n.log.Warn("report commands not run at shutdown", zap.Int("count", k))
	}
	if k, _ := n.mem.Len(context.Background()); k > 0 {
		n.log.Warn("webhook notifications kept in memory are lost at shutdown",
			zap.Int("count", k))
	}
}

func (n *Notifier) commandWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-n.queue:
			res := n.command.runAndLog(e)
			n.count(func(s *Stats) {
				s.CommandsRun++
				if res.Err != nil {
					s.CommandsFailed++
				}
			})
		}
	}
}

// dispatch delivers due outbox entries: at once when Notify kicks, when
// a retry it scheduled is due, and every poll interval for entries that
// other processes left.
func (n *Notifier) dispatch(ctx context.Context) {
	sem := make(chan struct{}, n.o.MaxDelivery)
	timer := time.NewTimer(0) // the first round at once: leftovers
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			n.inflight.Wait()
			return
		case <-n.kick:
		case <-timer.C:
		}
		for _, box := range n.boxes() {
			n.claimRound(ctx, box, sem)
		}
		timer.Reset(n.untilNext())
	}
}

func (n *Notifier) boxes() []action.Outbox {
	if n.persist == nil {
		return []action.Outbox{n.mem}
	}
	return []action.Outbox{n.persist, n.mem}
}

// claimBatch is how many entries one Claim takes.
const claimBatch = 16

// claimRound claims and delivers what is due in box, a batch at a time.
func (n *Notifier) claimRound(ctx context.Context, box action.Outbox, sem chan struct{}) {
	lease := n.o.Timeout + 30*time.Second
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, n.o.Timeout)
		entries, err := box.Claim(cctx, n.o.Now(), lease, claimBatch)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				n.log.Warn("webhook outbox not readable; retried later", zap.Error(err))
			}
			return
		}
		for i, e := range entries {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				n.release(box, entries[i:])
				return
			}
			n.mu.Lock()
			delete(n.scheduled, e.ID)
			n.mu.Unlock()
			n.inflight.Add(1)
			go func() {
				defer func() { <-sem; n.inflight.Done() }()
				n.deliver(ctx, box, e)
			}()
		}
		if len(entries) < claimBatch {
			return
		}
	}
}

// release makes claimed entries due again at once, for the next process.
func (n *Notifier) release(box action.Outbox, entries []action.OutboxEntry) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, e := range entries {
		e.Due = n.o.Now()
		box.Retry(ctx, e)
	}
}

// deliver makes one attempt at e and records its outcome in box. An
// entry for a URL that is no longer configured, left by an earlier
// process, is dropped.
func (n *Notifier) deliver(ctx context.Context, box action.Outbox, e action.OutboxEntry) {
	// The bookkeeping must happen even when ctx has just ended.
	bctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	log := n.log.With(zap.String("id", e.ID), zap.String("url", redactURL(e.Target)),
		zap.Int("attempt", e.Attempts+1))
	if !n.targets[e.Target] {
		log.Warn("webhook notification dropped: its URL is no longer configured")
		if err := box.Done(bctx, e.ID); err != nil {
			log.Warn("dropped webhook notification not removed from the outbox",
				zap.Error(err))
		}
		// Counted once the outbox says so too.
		n.count(func(s *Stats) { s.WebhooksAbandoned++ })
		return
	}

	err := n.hook.post(ctx, e.Target, e.ID, e.Body)

	switch {
	case err == nil:
		log.Info("webhook notification delivered")
		if err := box.Done(bctx, e.ID); err != nil {
			log.Warn("delivered webhook notification not removed from the outbox;"+
				" it may be sent again", zap.Error(err))
		}
		n.count(func(s *Stats) { s.WebhooksDelivered++ })
		return
	case ctx.Err() != nil:
		// Shutting down: not the receiver's fault, no attempt counted.
		n.release(box, []action.OutboxEntry{e})
		return
	}

	n.count(func(s *Stats) { s.WebhooksFailed++ })
	e.Attempts++
	e.LastError = err.Error()
	var perm permanentError
	if errors.As(err, &perm) || e.Attempts >= n.o.MaxAttempts {
		log.Error("webhook notification given up", zap.Error(err),
			zap.Bool("permanent", errors.As(err, &perm)))
		if err := box.Done(bctx, e.ID); err != nil {
			log.Warn("abandoned webhook notification not removed from the outbox",
				zap.Error(err))
		}
		n.count(func(s *Stats) { s.WebhooksAbandoned++ })
		return
	}
	wait := n.o.Backoff(e.Attempts)
	e.Due = n.o.Now().Add(wait)
	log.Warn("webhook delivery failed; will retry", zap.Error(err), zap.Duration("in", wait))
	if err := box.Retry(bctx, e); err != nil {
		log.Warn("webhook retry not recorded; the entry comes back when its lease ends",
			zap.Error(err))
	}
	n.mu.Lock()
	n.scheduled[e.ID] = e.Due
	n.mu.Unlock()
	// Wake the dispatcher so that it sets its timer for this retry; a
	// wake-up with nothing due costs one Claim.
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// untilNext is how long the dispatcher may sleep: until the earliest
// retry this process scheduled, or a poll interval.
func (n *Notifier) untilNext() time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	wait := n.o.PollInterval
	now := n.o.Now()
	for id, due := range n.scheduled {
		// One already due was claimed by the round just made, or by
		// another process; one more round settles it either way.
		if !due.After(now) {
			delete(n.scheduled, id)
		}
		wait = min(wait, due.Sub(now))
	}
	return max(wait, time.Millisecond)
}

// Stats returns what the notifier did so far.
func (n *Notifier) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

func (n *Notifier) count(f func(*Stats)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	f(&n.stats)
}

// redactURL hides the password of a URL for the log.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// newID returns 32 random hex digits.
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
