package notify

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"

	"github.com/authbl-milter/authbl-milter/action"
	"github.com/authbl-milter/authbl-milter/milter"
)

// Event is the facts of one new detection, as the command and the
// webhooks receive them. Every string but Action, Time and Host came from
// the SMTP client or the MTA, so from a possible attacker: EventOf
// strips their control characters.
type Event struct {
	Account    string    // the lowercased SASL login
	ClientIP   string    // the SMTP client's address
	ClientName string    // its host name, as the MTA found it
	Helo       string    // its HELO name
	Sender     string    // the envelope sender, without angle brackets
	AuthType   string    // the SASL mechanism
	Reason     string    // ip, recipient or flagged
	List       string    // the list that matched
	Recipient  string    // the listed dropbox, for reason recipient
	Recipients []string  // every recipient of the transaction, normalised
	QueueID    string    // the MTA's queue id, when known
	Action     string    // what the mail got: reject, quarantine, log or tempfail
	Time       time.Time // when it was decided
	Host       string    // the host the milter runs on
}

// EventOf turns a milter detection into an Event, cleaned.
func EventOf(d milter.Detection, host string) Event {
	e := Event{
		Account:    d.Account,
		ClientIP:   d.ClientIP,
		ClientName: d.ClientName,
		Helo:       d.Helo,
		Sender:     strings.TrimSuffix(strings.TrimPrefix(d.Sender, "<"), ">"),
		AuthType:   d.AuthType,
		Reason:     d.Verdict.Reason,
		List:       d.Verdict.List,
		Recipient:  d.Verdict.Recipient,
		Recipients: append([]string(nil), d.Recipients...),
		QueueID:    d.QueueID,
		Action:     actionOf(d.Verdict.Outcome),
		Time:       d.Time,
		Host:       host,
	}
	return e.clean()
}

// actionOf names what a compromised account's mail got.
func actionOf(o action.Outcome) string {
	if o == action.Accept {
		return string(action.ModeLog)
	}
	return o.String()
}

// maxValue caps one value, and maxRecipients the recipient list, well
// under Linux's 128 KiB limit on one environment string.
const (
	maxValue      = 4 << 10
	maxRecipients = 64 << 10
)

// clean strips control characters from every fact and caps their length.
func (e Event) clean() Event {
	for _, s := range []*string{&e.Account, &e.ClientIP, &e.ClientName, &e.Helo,
		&e.Sender, &e.AuthType, &e.Reason, &e.List, &e.Recipient, &e.QueueID,
		&e.Action, &e.Host} {
		*s = Clean(*s, maxValue)
	}
	rcpts := make([]string, 0, len(e.Recipients))
	total := 0
	for _, r := range e.Recipients {
		r = Clean(r, maxValue)
		if total += len(r) + 1; total > maxRecipients {
			break
		}
		rcpts = append(rcpts, r)
	}
	e.Recipients = rcpts
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = e.Time.UTC()
	return e
}

// Clean returns s as action.StripControl does, cut to at most max bytes
// on a character boundary.
func Clean(s string, max int) string {
	s = action.StripControl(s)
	if len(s) <= max {
		return s
	}
	cut := 0
	for i := range s {
		if i > max {
			break
		}
		cut = i
	}
	return s[:cut]
}

// legacyRecipient is the recipient variable of the original policy
// daemon, which saw one recipient at a time: the listed dropbox, or else
// the first recipient.
func (e Event) legacyRecipient() string {
	if e.Recipient != "" || len(e.Recipients) == 0 {
		return e.Recipient
	}
	return e.Recipients[0]
}

// Environ returns the environment of the report command: the facts under
// AUTHBL_* names and under the names the original Postfix policy daemon
// gave its report scripts, and PATH. Nothing else of the milter's own
// environment is passed on: it may hold secrets such as the Abusix key.
func (e Event) Environ(path string) []string {
	vars := [][2]string{
		{"AUTHBL_EVENT", "account_compromised"},
		{"AUTHBL_ACCOUNT", e.Account},
		{"AUTHBL_CLIENT_IP", e.ClientIP},
		{"AUTHBL_CLIENT_NAME", e.ClientName},
		{"AUTHBL_HELO", e.Helo},
		{"AUTHBL_SENDER", e.Sender},
		{"AUTHBL_SASL_METHOD", e.AuthType},
		{"AUTHBL_REASON", e.Reason},
		{"AUTHBL_LIST", e.List},
		{"AUTHBL_RECIPIENT", e.Recipient},
		{"AUTHBL_RECIPIENTS", strings.Join(e.Recipients, " ")},
		{"AUTHBL_RECIPIENT_COUNT", strconv.Itoa(len(e.Recipients))},
		{"AUTHBL_QUEUE_ID", e.QueueID},
		{"AUTHBL_ACTION", e.Action},
		{"AUTHBL_TIME", e.Time.Format(time.RFC3339)},
		{"AUTHBL_HOST", e.Host},
		// The original daemon's names.
		{"sasl_username", e.Account},
		{"client_address", e.ClientIP},
		{"client_name", e.ClientName},
		{"helo_name", e.Helo},
		{"sender", e.Sender},
		{"recipient", e.legacyRecipient()},
		{"sasl_method", e.AuthType},
		{"queue_id", e.QueueID},
		{"PATH", path},
	}
	env := make([]string, len(vars))
	for i, v := range vars {
		env[i] = v[0] + "=" + v[1]
	}
	return env
}

// Document is the JSON body a webhook receives.
type Document struct {
	Event      string   `json:"event"` // always account_compromised
	Account    string   `json:"account"`
	ClientIP   string   `json:"client_ip"`
	ClientName string   `json:"client_name"`
	Helo       string   `json:"helo"`
	Sender     string   `json:"sender"`
	SASLMethod string   `json:"sasl_method"`
	Reason     string   `json:"reason"`
	List       string   `json:"list"`
	Recipient  string   `json:"recipient"`
	Recipients []string `json:"recipients"`
	QueueID    string   `json:"queue_id"`
	Action     string   `json:"action"`
	Time       string   `json:"time"` // RFC 3339, UTC
	Host       string   `json:"host"`
}

// JSON returns the webhook body for e.
func (e Event) JSON() []byte {
	rcpts := e.Recipients
	if rcpts == nil {
		rcpts = []string{}
	}
	b, err := json.Marshal(Document{
		Event: "account_compromised", Account: e.Account, ClientIP: e.ClientIP,
		ClientName: e.ClientName, Helo: e.Helo, Sender: e.Sender, SASLMethod: e.AuthType,
		Reason: e.Reason, List: e.List, Recipient: e.Recipient, Recipients: rcpts,
		QueueID: e.QueueID, Action: e.Action, Time: e.Time.Format(time.RFC3339), Host: e.Host,
	})
	if err != nil {
		panic("notify: a Document always marshals: " + err.Error())
	}
	return b
}
