// Package metrics defines the Prometheus metrics of authbl-milter, under
// the prefix authbl_milter_, and serves them with the health endpoints.
// The other packages do not import Prometheus: they report through small
// hooks of their own (an observer, counters read at scrape time) that the
// command wires to the methods here. The metrics whose values are read
// from their owners at scrape time (cache, list health, notifications,
// store) are registered by the command with CounterFunc, GaugeFunc and
// their Vec forms; the README lists them all.
package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const namespace = "authbl_milter"

// Metrics holds the collectors. Its methods are safe for concurrent use.
type Metrics struct {
	Registry *prometheus.Registry

	transactions  *prometheus.CounterVec
	lookups       *prometheus.CounterVec
	lookupSeconds *prometheus.HistogramVec
	detections    *prometheus.CounterVec
	actions       *prometheus.CounterVec
}

// New creates the collectors on a registry of their own, with the Go
// runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		// authbl_milter_transactions_total counts milter transactions by
		// outcome: unauthenticated, exempt, accept, reject, quarantine,
		// tempfail.
		transactions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "transactions_total",
			Help: "Milter transactions by outcome.",
		}, []string{"outcome"}),
		// authbl_milter_lookups_total counts list lookups by list and
		// result: listed, clean, unexpected, error.
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "lookups_total",
			Help: "List lookups by list and result.",
		}, []string{"list", "result"}),
		// authbl_milter_lookup_duration_seconds is the time of one lookup,
		// cache hits included.
		lookupSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Name: "lookup_duration_seconds",
			Help:    "Duration of list lookups.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"list"}),
		// authbl_milter_detections_total counts transactions from
		// compromised accounts by reason (ip, recipient, flagged) and
		// whether it was the account's first detection.
		detections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "detections_total",
			Help: "Transactions from compromised accounts by reason and novelty.",
		}, []string{"reason", "new"}),
		// authbl_milter_actions_total counts the actions taken on mail from
		// compromised accounts: reject, quarantine, log, tempfail.
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "actions_total",
			Help: "Actions taken on mail from compromised accounts.",
		}, []string{"action"}),
	}
	m.Registry.MustRegister(m.transactions, m.lookups, m.lookupSeconds, m.detections,
		m.actions,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Transaction counts one transaction's outcome.
func (m *Metrics) Transaction(outcome string) {
	m.transactions.WithLabelValues(outcome).Inc()
}

// Lookup counts one lookup and observes its duration.
func (m *Metrics) Lookup(list, result string, d time.Duration) {
	m.lookups.WithLabelValues(list, result).Inc()
	m.lookupSeconds.WithLabelValues(list).Observe(d.Seconds())
}

// Detection counts a transaction from a compromised account and the
// action taken on it.
func (m *Metrics) Detection(reason string, isNew bool, action string) {
	m.detections.WithLabelValues(reason, strconv.FormatBool(isNew)).Inc()
	m.actions.WithLabelValues(action).Inc()
}

// CounterFunc registers a counter whose value f reads from elsewhere, such
// as the lookup cache's hit count. name is without the prefix.
func (m *Metrics) CounterFunc(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: namespace, Name: name, Help: help}, f))
}

// GaugeFunc registers a gauge whose value f reads from elsewhere, such as
// the number of detections waiting for the account store.
func (m *Metrics) GaugeFunc(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: namespace, Name: name, Help: help}, f))
}
