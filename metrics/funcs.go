package metrics

import "github.com/prometheus/client_golang/prometheus"

// Sample is one labelled value read at scrape time.
type Sample struct {
	Labels []string
	Value  float64
}

// funcCollector reads labelled values from elsewhere at each scrape.
type funcCollector struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	read  func() []Sample
	nvars int
}

func (c *funcCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *funcCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.read() {
		if len(s.Labels) != c.nvars {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.desc, c.kind, s.Value, s.Labels...)
	}
}

// CounterVecFunc registers a labelled counter whose values read returns
// at each scrape, such as notification counts kept by the notifier.
func (m *Metrics) CounterVecFunc(name, help string, labels []string, read func() []Sample) {
	m.Registry.MustRegister(&funcCollector{
		desc: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil),
		kind: prometheus.CounterValue, read: read, nvars: len(labels),
	})
}

// GaugeVecFunc registers a labelled gauge whose values read returns at
// each scrape, such as the health of each list.
func (m *Metrics) GaugeVecFunc(name, help string, labels []string, read func() []Sample) {
	m.Registry.MustRegister(&funcCollector{
		desc: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil),
		kind: prometheus.GaugeValue, read: read, nvars: len(labels),
	})
}
