package action

import (
	"fmt"
	"net/netip"

	"github.com/authbl-milter/authbl-milter/lookup"
)

// Mode is what happens to mail from a compromised account.
type Mode string

// The modes, as the config spells them.
const (
	ModeReject     Mode = "reject"     // 550 5.7.1 at end of envelope
	ModeQuarantine Mode = "quarantine" // accepted and held by the MTA
	ModeLog        Mode = "log"        // accepted; the detection is logged
)

// Outcome is the answer the MTA gets.
type Outcome int

// The outcomes.
const (
	Accept Outcome = iota
	Reject
	Quarantine
	Tempfail
)

// String names the outcome for logs.
func (o Outcome) String() string {
	switch o {
	case Reject:
		return "reject"
	case Quarantine:
		return "quarantine"
	case Tempfail:
		return "tempfail"
	default:
		return "accept"
	}
}

// Reasons for a detection, as logged in the reason field.
const (
	ReasonIP        = "ip"        // the client address is listed
	ReasonRecipient = "recipient" // a recipient is a listed dropbox
	ReasonFlagged   = "flagged"   // the account was flagged before
)

// Policy is the configured part of a decision.
type Policy struct {
	Mode Mode
	// TempfailOnError answers 451 when a lookup or the store failed and
	// nothing else proves the account compromised; otherwise such mail is
	// accepted.
	TempfailOnError bool
}

// RecipientFacts are the answers of the recipient lists for one
// recipient.
type RecipientFacts struct {
	Address string // normalised
	Answers []lookup.Answer
}

// Facts are what is known about one authenticated transaction when it is
// decided.
type Facts struct {
	Account    string
	ClientIP   netip.Addr // invalid when the MTA did not say
	IP         []lookup.Answer
	Recipients []RecipientFacts
	Flag       *Flag // the stored flag; nil when not flagged
	StoreErr   error // the store could not be read
}

// Match is one listing found in the facts.
type Match struct {
	Reason    string // ReasonIP or ReasonRecipient
	List      string
	Item      string // the IP or recipient
	Codes     string
	Recipient string // for ReasonRecipient
}

// Verdict is the decision about one transaction.
type Verdict struct {
	Compromised bool
	Reason      string // ReasonIP, ReasonRecipient or ReasonFlagged
	List        string // the list behind Reason
	Recipient   string // the dropbox, for ReasonRecipient
	Matches     []Match
	Outcome     Outcome
	// Failures describes each lookup that failed, and StoreErr a failed
	// read of the account store. A verdict with either and no listing
	// followed the on_error policy.
	Failures []string
	StoreErr error
}

// Detection reports whether the verdict found a listing, as opposed to
// acting on an earlier flag only.
func (v Verdict) Detection() bool {
	return v.Reason == ReasonIP || v.Reason == ReasonRecipient
}

// Decide turns facts into a verdict under policy p.
func Decide(f Facts, p Policy) Verdict {
	var v Verdict
	for _, a := range f.IP {
		v.note(a, ReasonIP, "")
	}
	for _, r := range f.Recipients {
		for _, a := range r.Answers {
			v.note(a, ReasonRecipient, r.Address)
		}
	}
	v.StoreErr = f.StoreErr

	switch {
	case len(v.Matches) > 0:
		m := v.Matches[0]
		v.Compromised, v.Reason, v.List, v.Recipient = true, m.Reason, m.List, m.Recipient
	case f.Flag != nil:
		v.Compromised, v.Reason, v.List = true, ReasonFlagged, f.Flag.List
	}

	switch {
	case v.Compromised && p.Mode == ModeQuarantine:
		v.Outcome = Quarantine
	case v.Compromised && p.Mode == ModeLog:
		v.Outcome = Accept
	case v.Compromised:
		v.Outcome = Reject
	case (len(v.Failures) > 0 || v.StoreErr != nil) && p.TempfailOnError:
		v.Outcome = Tempfail
	default:
		v.Outcome = Accept
	}
	return v
}

func (v *Verdict) note(a lookup.Answer, reason, rcpt string) {
	switch a.Result {
	case lookup.Listed:
		v.Matches = append(v.Matches, Match{
			Reason: reason, List: a.List, Item: a.Item,
			Codes: a.CodesString(), Recipient: rcpt,
		})
	case lookup.Error:
		v.Failures = append(v.Failures, fmt.Sprintf("list %s: %s: %v", a.List, a.Item, a.Err))
	}
}
