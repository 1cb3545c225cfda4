package milter

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/lookup"
)

// grace is how long past the lookup timeout the decision waits for a
// lookup goroutine before it counts the lookup as failed. Lookups stop on
// their own at the timeout; this only guards against one that does not.
const grace = 500 * time.Millisecond

// decide waits for the transaction's lookups and the store read, applies
// the decision, and records a new detection before the answer is sent.
func (s *session) decide() {
	tx := s.tx
	tx.decided = true
	s.hold(tx)
	start := time.Now()
	facts := tx.collect()
	v := action.Decide(facts, tx.opts.Policy)

	isNew := false
	if v.Detection() {
		var err error
		// The write gets what is left of the budget, so that the answer
		// still comes in time when the store is slow; what it cannot take
		// is kept in memory by Accounts.
		budget := max(tx.opts.Timeout-time.Since(start), minRecordTime)
		isNew, err = tx.record(v, budget)
		if err != nil {
			// Accounts logs the store's outage, once per interval.
			tx.log.Debug("detection not stored; kept in memory and retried",
				zap.String("reason", v.Reason), zap.String("queue_id", tx.queueID),
				zap.Error(err))
			if tx.opts.Policy.TempfailOnError {
				v.Outcome = action.Tempfail
			}
		}
	}
	tx.verdict = v
	tx.logVerdict(v, isNew)
	tx.opts.Observer.Transaction(v.Outcome.String())
	if v.Compromised {
		tx.opts.Observer.Detection(v.Reason, isNew, string(tx.opts.Policy.Mode))
	}

	if v.Compromised && tx.opts.OnDetection != nil {
		d := tx.detection(s.helo, v, isNew)
		go tx.opts.OnDetection(d)
	}
}

// collect waits for everything the transaction started.
func (tx *transaction) collect() action.Facts {
	timer := time.NewTimer(tx.opts.Timeout + grace)
	defer timer.Stop()
	f := action.Facts{Account: tx.account, ClientIP: tx.clientIP}

	switch {
	case tx.addrErr != nil:
		f.IP = errorAnswers(tx.opts.Checker, lookup.KindIP, "", tx.addrErr)
	case tx.ip != nil:
		answers, _, ok := tx.ip.wait(timer.C)
		if !ok {
			answers = errorAnswers(tx.opts.Checker, lookup.KindIP, tx.clientIP.String(),
				context.DeadlineExceeded)
		}
		f.IP = answers
	}
	for _, r := range tx.rcpts {
		if r.answers == nil {
			continue
		}
		answers, _, ok := r.answers.wait(timer.C)
		if !ok {
			answers = errorAnswers(tx.opts.Checker, lookup.KindRecipient, r.addr,
				context.DeadlineExceeded)
		}
		f.Recipients = append(f.Recipients, action.RecipientFacts{Address: r.addr, Answers: answers})
	}
	// A recipient that could not be read was not checked: a failed
	// lookup, so that on_error applies.
	for _, err := range tx.badRcpts {
		f.Recipients = append(f.Recipients, action.RecipientFacts{
			Answers: errorAnswers(tx.opts.Checker, lookup.KindRecipient, "", err)})
	}
	flag, err, ok := tx.flag.wait(timer.C)
	switch {
	case !ok:
		f.StoreErr = context.DeadlineExceeded
	case err != nil:
		f.StoreErr = err
	default:
		f.Flag = flag
	}
	return f
}

// errorAnswers returns an error answer from every list of kind k.
func errorAnswers(c *lookup.Checker, k lookup.Kind, item string, err error) []lookup.Answer {
	var out []lookup.Answer
	for _, l := range c.Lists() {
		if l.Kind == k {
			out = append(out, lookup.Answer{List: l.Name, Item: item,
				Result: lookup.Error, Err: err})
		}
	}
	return out
}

// minRecordTime is the least time given to writing a detection.
const minRecordTime = 250 * time.Millisecond

func (tx *transaction) record(v action.Verdict, budget time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	return tx.opts.Accounts.Record(ctx, action.Flag{
		Account:   tx.account,
		Reason:    v.Reason,
		List:      v.List,
		ClientIP:  ipString(tx),
		Recipient: v.Recipient,
		QueueID:   tx.queueID,
	})
}

// logVerdict writes the decision: the detection event for a compromised
// account, one info line otherwise.
func (tx *transaction) logVerdict(v action.Verdict, isNew bool) {
	elapsed := zap.Duration("elapsed", time.Since(tx.start))
	queueID := zap.String("queue_id", tx.queueID)
	// A store failure is left to Accounts, which logs an outage once per
	// interval rather than once per transaction.
	if v.StoreErr != nil {
		tx.log.Debug("account store not read", zap.Error(v.StoreErr), queueID)
	}
	if len(v.Failures) > 0 {
		tx.log.Warn("lookups failed", zap.Strings("failures", v.Failures), queueID)
	}
	// The two lines below are written through the server's logger with
	// the transaction's fields given here, not through tx.log: building
	// tx.log's fields would cost more than the line itself.
	conn, account := zap.Uint64("conn", tx.conn), zap.String("account", tx.account)
	if v.Compromised {
		tx.opts.Log.Info("account compromised", conn, account,
			zap.String("event", "account_compromised"),
			zap.String("client_ip", ipString(tx)),
			zap.String("reason", v.Reason),
			zap.String("list", v.List),
			zap.String("recipient", v.Recipient),
			zap.String("action", string(tx.opts.Policy.Mode)),
			zap.String("outcome", v.Outcome.String()),
			queueID,
			zap.Bool("new", isNew),
			elapsed)
		return
	}
	tx.opts.Log.Info("transaction checked", conn, account,
		zap.String("client_ip", ipString(tx)),
		zap.Int("recipients", len(tx.rcpts)),
		zap.String("outcome", v.Outcome.String()),
		queueID,
		elapsed)
}

func (tx *transaction) detection(helo string, v action.Verdict, isNew bool) Detection {
	d := Detection{
		Account:    tx.account,
		ClientIP:   ipString(tx),
		ClientName: tx.clientName,
		Helo:       helo,
		Sender:     tx.sender,
		QueueID:    tx.queueID,
		AuthType:   tx.authType,
		Verdict:    v,
		New:        isNew,
		Time:       time.Now(),
	}
	for _, r := range tx.rcpts {
		d.Recipients = append(d.Recipients, r.addr)
	}
	return d
}

// quarantineReason is the text the MTA keeps with a held message. Parts
// of it come from the client, so control characters are dropped.
func quarantineReason(tx *transaction) string {
	v := tx.verdict
	r := "authbl-milter: account " + tx.account + " compromised (" + v.Reason
	if v.List != "" {
		r += ", list " + v.List
	}
	return action.StripControl(r + ")")
}

func ipString(tx *transaction) string {
	if !tx.clientIP.IsValid() {
		return ""
	}
	return tx.clientIP.String()
}
