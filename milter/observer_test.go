package milter_test

import (
	"sync"
	"testing"

	"github.com/authbl-milter/authbl-milter/milter/mtasim"
)

// countingObserver records what the milter reports, as metrics would.
type countingObserver struct {
	mu         sync.Mutex
	outcomes   map[string]int
	detections []string
}

func (o *countingObserver) Transaction(outcome string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.outcomes[outcome]++
}

func (o *countingObserver) Detection(reason string, isNew bool, action string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := "old"
	if isNew {
		n = "new"
	}
	o.detections = append(o.detections, reason+"/"+n+"/"+action)
}

func TestObserverCountsOutcomes(t *testing.T) {
	r := newRig(t, rigOptions{allow: []string{"exempt@example.com"}})
	obs := &countingObserver{outcomes: map[string]int{}}
	o := *r.srv.Options()
	o.Observer = obs
	r.srv.SetOptions(o)

	r.send(authTx("a@example.com", "198.51.100.1", "x@example.org"))
	r.send(authTx("b@example.com", listedIP, "x@example.org"))
	r.send(authTx("b@example.com", "198.51.100.1", "x@example.org"))
	r.send(authTx("exempt@example.com", listedIP, "x@example.org"))
	r.send(mtasim.Transaction{ClientAddr: listedIP, Rcpts: []string{"x@example.org"}})

	want := map[string]int{"accept": 1, "reject": 2, "exempt": 1, "unauthenticated": 1}
	for k, v := range want {
		if obs.outcomes[k] != v {
			t.Errorf("outcome %s counted %d times, want %d (all: %v)", k, obs.outcomes[k], v, obs.outcomes)
		}
	}
	if len(obs.detections) != 2 || obs.detections[0] != "ip/new/reject" ||
		obs.detections[1] != "flagged/old/reject" {
		t.Fatalf("detections %v", obs.detections)
	}
}
