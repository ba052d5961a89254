package loadgen

import (
	"slices"
	"time"
)

// Latency summarises end-to-end latencies in microseconds.
type Latency struct {
	Samples int     `json:"samples"`
	P50     float64 `json:"p50_us"`
	P95     float64 `json:"p95_us"`
	P99     float64 `json:"p99_us"`
	Max     float64 `json:"max_us"`
}

// Percentile is the nearest-rank percentile p (0 < p ≤ 100) of sorted.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.999999999) - 1
	rank = min(max(rank, 0), len(sorted)-1)
	return sorted[rank]
}

// Summarize sorts samples in place and returns their percentiles.
func Summarize(samples []time.Duration) Latency {
	if len(samples) == 0 {
		return Latency{}
	}
	slices.Sort(samples)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	return Latency{
		Samples: len(samples),
		P50:     us(Percentile(samples, 50)),
		P95:     us(Percentile(samples, 95)),
		P99:     us(Percentile(samples, 99)),
		Max:     us(samples[len(samples)-1]),
	}
}

// Result is one run of one scenario against one broker.
type Result struct {
	Broker      string  `json:"broker"` // label: veil, mochi, mosquitto
	Profile     string  `json:"profile"`
	Scenario    string  `json:"scenario"`
	QoS         byte    `json:"qos"`
	Clients     int     `json:"clients"`
	PayloadSize int     `json:"payload_bytes"`
	RateTarget  float64 `json:"rate_target"` // published msg/s asked for; 0 = max
	Duration    float64 `json:"duration_s"`  // publishing phase
	Round       int     `json:"round,omitempty"`
	Tag         string  `json:"tag,omitempty"`

	Sent      int64 `json:"sent"`
	Expected  int64 `json:"expected"`  // deliveries the entitled receivers should get
	Delivered int64 `json:"delivered"` // distinct deliveries to entitled receivers
	Lost      int64 `json:"lost"`      // expected - delivered
	Duplicate int64 `json:"duplicates"`
	Withheld  int64 `json:"withheld"` // deliveries to None receivers (they are leaks if > 0)

	SentPerSec      float64 `json:"sent_per_s"`
	DeliveredPerSec float64 `json:"delivered_per_s"`
	Latency         Latency `json:"latency"`
	// BrokerCPU is the CPU time the broker process used from the first
	// publish until the last delivery (with --broker-pid): the broker's cost,
	// which unlike msg/s does not depend on how much CPU the load generator
	// and the rest of the machine left it.
	BrokerCPU       float64 `json:"broker_cpu_s,omitempty"`
	CPUPerDelivered float64 `json:"broker_cpu_us_per_delivered,omitempty"`
	// BrokerInstructions is the instructions the broker's threads retired
	// over the same span (Linux perf events, where available): a cost
	// measure other work on the machine barely moves.
	BrokerInstructions float64 `json:"broker_instructions,omitempty"`
	KInstrPerDelivered float64 `json:"broker_kinstr_per_delivered,omitempty"`

	// Enforcement is the time Veil's enforcement added to deliveries,
	// measured inside the broker (--metrics).
	Enforcement *EnforcementTime `json:"enforcement,omitempty"`
	// PublishSpan is the broker's own time from OnPublish to OnPublished
	// (--metrics), comparable between Veil and Veil without enforcement.
	PublishSpan *PublishSpan `json:"publish_span,omitempty"`

	Violations    int64       `json:"violations"` // leaked or mis-rewritten messages
	ViolationLog  []string    `json:"violation_examples,omitempty"`
	RefusedSubs   int         `json:"refused_subscriptions"` // SUBACK refusals of None receivers (allowed)
	Views         []string    `json:"views"`                 // receiver view counts, e.g. "raw=10"
	Notes         []string    `json:"notes,omitempty"`
	PolicyChange  *Change     `json:"policy_change,omitempty"`
	Idle          *IdleResult `json:"idle,omitempty"`
	OK            bool        `json:"ok"`
	FailureReason string      `json:"failure,omitempty"`
}

// IdleResult is the result of the idle-clients scenario.
type IdleResult struct {
	Clients        int     `json:"clients"`
	Connected      int     `json:"connected"`
	BaseClients    int     `json:"base_clients"` // connected when RSSBeforeKiB was read
	RSSBeforeKiB   int64   `json:"rss_before_kib"`
	RSSAfterKiB    int64   `json:"rss_after_kib"`
	BytesPerClient float64 `json:"bytes_per_client"` // (after - before) / (clients - base)
	ConnectSeconds float64 `json:"connect_s"`
}

// Change is the result of the live policy change scenario.
type Change struct {
	Topic          string  `json:"topic"`
	AtSeq          uint64  `json:"published_after_seq"` // last message published before the change was acknowledged
	AppliedFromSeq uint64  `json:"applied_from_seq"`    // first message in the new view, per receiver (max)
	Lag            uint64  `json:"lag_messages"`        // applied_from - at_seq - 1 (0 = the next message)
	AckMillis      float64 `json:"ack_ms"`
}
