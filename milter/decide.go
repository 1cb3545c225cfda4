package milter

import (
	"context"
	"strings"
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
	tx.inflight = true
	s.srv.inflight.Add(1)
	facts := tx.collect()
	v := action.Decide(facts, tx.opts.Policy)

	isNew := false
	if v.Detection() {
		var err error
		isNew, err = tx.record(v)
		if err != nil {
			tx.log.Error("detection not stored; kept in memory and retried",
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

	if tx.ip != nil {
		answers, _, ok := tx.ip.wait(timer.C)
		if !ok {
			answers = timedOut(tx.opts.Checker, lookup.KindIP, tx.clientIP.String())
		}
		f.IP = answers
	}
	for _, r := range tx.rcpts {
		if r.answers == nil {
			continue
		}
		answers, _, ok := r.answers.wait(timer.C)
		if !ok {
			answers = timedOut(tx.opts.Checker, lookup.KindRecipient, r.addr)
		}
		f.Recipients = append(f.Recipients, action.RecipientFacts{Address: r.addr, Answers: answers})
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

// timedOut returns an error answer from every list of kind k.
func timedOut(c *lookup.Checker, k lookup.Kind, item string) []lookup.Answer {
	var out []lookup.Answer
	for _, l := range c.Lists() {
		if l.Kind == k {
			out = append(out, lookup.Answer{List: l.Name, Item: item,
				Result: lookup.Error, Err: context.DeadlineExceeded})
		}
	}
	return out
}

func (tx *transaction) record(v action.Verdict) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), tx.opts.Timeout)
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
	if len(v.Failures) > 0 {
		tx.log.Warn("lookups failed", zap.Strings("failures", v.Failures), queueID)
	}
	if v.Compromised {
		tx.log.Info("account compromised",
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
	tx.log.Info("transaction checked",
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
	return printable(r + ")")
}

func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

func ipString(tx *transaction) string {
	if !tx.clientIP.IsValid() {
		return ""
	}
	return tx.clientIP.String()
}
