// Package metrics defines every Prometheus metric of authbl-milter, in
// this one file, under the prefix authbl_milter_, and serves them with
// the health endpoints. The other packages do not import Prometheus: they
// report through small hooks (functions and interfaces of their own) that
// the command wires to the methods here.
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
	notifications *prometheus.CounterVec
	listHealthy   *prometheus.GaugeVec
	storeErrors   *prometheus.CounterVec
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
		// authbl_milter_notifications_total counts notifications by channel
		// (command, webhook) and result (ok, failed, retry).
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "notifications_total",
			Help: "Notifications of new detections by channel and result.",
		}, []string{"channel", "result"}),
		// authbl_milter_list_healthy is 1 while a list passes its
		// self-test, 0 while it fails or does not answer.
		listHealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "list_healthy",
			Help: "1 while the list passes its self-test, else 0.",
		}, []string{"list"}),
		// authbl_milter_store_errors_total counts failed account store
		// operations by operation (get, put, flush).
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "store_errors_total",
			Help: "Failed account store operations.",
		}, []string{"op"}),
	}
	m.Registry.MustRegister(m.transactions, m.lookups, m.lookupSeconds, m.detections,
		m.actions, m.notifications, m.listHealthy, m.storeErrors,
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

// Notification counts a notification attempt's result.
func (m *Metrics) Notification(channel, result string) {
	m.notifications.WithLabelValues(channel, result).Inc()
}

// ListHealth sets a list's health.
func (m *Metrics) ListHealth(list string, healthy bool) {
	v := 0.0
	if healthy {
		v = 1
	}
	m.listHealthy.WithLabelValues(list).Set(v)
}

// StoreError counts a failed store operation.
func (m *Metrics) StoreError(op string) {
	m.storeErrors.WithLabelValues(op).Inc()
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
