package broker

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/veil-iot/veil/hooks"
)

// Names of the enforcement latency histograms (veil bench reads them).
const (
	PublishPathMetric = "veil_enforcement_publish_path_seconds"
	EncodeMetric      = "veil_enforcement_encode_seconds"
	PublishSpanMetric = "veil_publish_span_seconds"
)

// spanBuckets resolve a difference of 200 µs between the spans of two
// brokers: 25 µs steps up to a millisecond.
var spanBuckets = func() []float64 {
	var b []float64
	for us := 25; us <= 1000; us += 25 {
		b = append(b, float64(us)/1e6)
	}
	return append(b, 1.5e-3, 2e-3, 3e-3, 5e-3, 10e-3, 20e-3, 50e-3, 100e-3)
}()

// newPublishSpan returns the hook timing publishes inside the broker and its histogram.
func newPublishSpan() (*hooks.PublishSpan, prometheus.Collector) {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: PublishSpanMetric, Buckets: spanBuckets,
		Help: "Time from a publish's first OnPublish hook to OnPublished (hooks, matching, every delivery's ACL check, copy and queueing), sampled; the same with enforcement off."})
	return &hooks.PublishSpan{Observe: h.Observe}, h
}

// timingBuckets resolve the benchmark's target (at most 200 µs added to a
// delivery) in 10 µs steps near it, and the tail beyond it. The report adds
// the publish path's and the encode's bucket bounds: with 50 µs steps, any
// path p99 from 151 to 200 µs read "≤ 201", a miss.
var timingBuckets = []float64{1e-6, 2e-6, 5e-6, 10e-6, 20e-6, 30e-6, 50e-6, 75e-6, 100e-6, 125e-6, 150e-6,
	160e-6, 170e-6, 180e-6, 190e-6, 200e-6,
	300e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 50e-3}

// newTiming returns the enforcer's sampled timing and its histograms.
func newTiming() (*hooks.Timing, []prometheus.Collector) {
	path := prometheus.NewHistogram(prometheus.HistogramOpts{Name: PublishPathMetric, Buckets: timingBuckets,
		Help: "Time Veil's hooks spend on a message's publish path (publish decision, OnPublish, every delivery's decision and rendering), sampled."})
	encode := prometheus.NewHistogram(prometheus.HistogramOpts{Name: EncodeMetric, Buckets: timingBuckets,
		Help: "Time Veil's encode hook spends on one delivery (second decision, rendering lookup), sampled."})
	return &hooks.Timing{Path: path, Encode: encode}, []prometheus.Collector{path, encode}
}

// collector exposes mochi's counters and Veil's enforcement outcomes.
type collector struct {
	b           *Broker
	enforcement *prometheus.Desc
	gauges      []gauge
}

type gauge struct {
	desc *prometheus.Desc
	kind prometheus.ValueType
	read func() int64
}

func newCollector(b *Broker) *collector {
	info := b.MQTT.Info
	g := func(name, help string, kind prometheus.ValueType, v *int64) gauge {
		return gauge{prometheus.NewDesc(name, help, nil, nil), kind, func() int64 { return atomic.LoadInt64(v) }}
	}
	return &collector{
		b:           b,
		enforcement: prometheus.NewDesc("veil_enforcement_total", "Enforcement outcomes by kind.", []string{"outcome"}, nil),
		gauges: []gauge{
			g("veil_clients_connected", "Connected MQTT clients.", prometheus.GaugeValue, &info.ClientsConnected),
			g("veil_messages_received_total", "PUBLISH packets received.", prometheus.CounterValue, &info.MessagesReceived),
			g("veil_messages_sent_total", "PUBLISH packets sent.", prometheus.CounterValue, &info.MessagesSent),
			g("veil_messages_dropped_total", "PUBLISH packets dropped for full client queues.", prometheus.CounterValue, &info.MessagesDropped),
			g("veil_retained_messages", "Retained messages.", prometheus.GaugeValue, &info.Retained),
			g("veil_inflight_messages", "QoS 1/2 messages in flight.", prometheus.GaugeValue, &info.Inflight),
			g("veil_subscriptions", "Subscriptions.", prometheus.GaugeValue, &info.Subscriptions),
			{prometheus.NewDesc("veil_state_changes_total", "Broker state changes recorded (sessions, subscriptions, retained and in-flight messages).", nil, nil),
				prometheus.CounterValue, b.state.changes.Load},
			{prometheus.NewDesc("veil_state_commits_total", "Transactions that wrote broker state changes to disk.", nil, nil),
				prometheus.CounterValue, b.state.commits.Load},
		},
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.enforcement
	for _, g := range c.gauges {
		ch <- g.desc
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, g := range c.gauges {
		ch <- prometheus.MustNewConstMetric(g.desc, g.kind, float64(g.read()))
	}
	for outcome, n := range c.b.Metrics.Snapshot() {
		ch <- prometheus.MustNewConstMetric(c.enforcement, prometheus.CounterValue, float64(n), outcome)
	}
}
