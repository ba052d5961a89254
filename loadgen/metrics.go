package loadgen

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The broker's histograms of the time its enforcement adds to deliveries
// (broker.PublishPathMetric and broker.EncodeMetric).
const (
	publishPathMetric = "veil_enforcement_publish_path_seconds"
	encodeMetric      = "veil_enforcement_encode_seconds"
	publishSpanMetric = "veil_publish_span_seconds"
)

// metricNames are the histograms veil bench --metrics reads.
var metricNames = []string{publishPathMetric, encodeMetric, publishSpanMetric}

// PublishSpan is the time from a publish's first OnPublish hook to
// OnPublished inside the broker (matching, every delivery's ACL check,
// copy and queueing), sampled the same with enforcement on or off; bucket
// upper bounds in µs.
type PublishSpan struct {
	Samples uint64  `json:"samples"`
	P50     float64 `json:"p50_us"`
	P99     float64 `json:"p99_us"`
}

// publishSpan is what the broker's span histogram recorded between two scrapes.
func publishSpan(before, after map[string]histogram) *PublishSpan {
	h := after[publishSpanMetric].since(before[publishSpanMetric])
	p := &PublishSpan{Samples: h.count(), P50: h.quantile(0.5), P99: h.quantile(0.99)}
	for _, v := range []*float64{&p.P50, &p.P99} {
		if math.IsInf(*v, 1) {
			*v = -1
		}
	}
	return p
}

// EnforcementTime is the time Veil's enforcement added to deliveries during
// a run, measured inside the broker (sampled histograms read from its
// /metrics before and after the run). Percentiles are upper bounds: the
// edge of the histogram bucket they fall in.
type EnforcementTime struct {
	// The publish path: the publish decision, OnPublish, and every
	// delivery's decision and rendering, which each delivery of the
	// message waits for at most.
	PathSamples uint64  `json:"path_samples"`
	PathP50     float64 `json:"path_p50_us"`
	PathP99     float64 `json:"path_p99_us"`
	// The encode hook, once per delivery on the subscriber's write loop.
	EncodeSamples uint64  `json:"encode_samples"`
	EncodeP50     float64 `json:"encode_p50_us"`
	EncodeP99     float64 `json:"encode_p99_us"`
	// AddedP99 bounds the p99 of what enforcement adds to one delivery:
	// PathP99 + EncodeP99. -1 when a percentile is beyond the largest bucket.
	AddedP99 float64 `json:"added_p99_us"`
}

// histogram is a cumulative bucket count per upper bound (seconds).
type histogram map[float64]uint64

// scrapeHistograms reads the named histograms from a Prometheus text endpoint.
func scrapeHistograms(ctx context.Context, url string, names ...string) (map[string]histogram, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("--metrics %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", url, err)
	}
	out := map[string]histogram{}
	for _, name := range names {
		f := families[name]
		if f == nil || f.GetType() != dto.MetricType_HISTOGRAM || len(f.Metric) != 1 {
			return nil, fmt.Errorf("--metrics %s: no histogram %s (is the broker Veil?)", url, name)
		}
		h := histogram{math.Inf(1): f.Metric[0].GetHistogram().GetSampleCount()}
		for _, b := range f.Metric[0].GetHistogram().GetBucket() {
			h[b.GetUpperBound()] = b.GetCumulativeCount()
		}
		out[name] = h
	}
	return out, nil
}

// since returns the observations of h made after before.
func (h histogram) since(before histogram) histogram {
	d := histogram{}
	for le, n := range h {
		d[le] = n - min(before[le], n)
	}
	return d
}

// count is the number of observations.
func (h histogram) count() uint64 { return h[math.Inf(1)] }

// quantile returns the upper bound, in µs, of the bucket holding quantile q
// (0 < q ≤ 1): +Inf when it is beyond the largest finite bucket, 0 when
// nothing was observed.
func (h histogram) quantile(q float64) float64 {
	total := h.count()
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	best := math.Inf(1)
	for le, n := range h {
		if n >= rank && le < best {
			best = le
		}
	}
	return best * 1e6
}

// enforcementTime is what the broker's histograms recorded between two scrapes.
func enforcementTime(before, after map[string]histogram) *EnforcementTime {
	path := after[publishPathMetric].since(before[publishPathMetric])
	encode := after[encodeMetric].since(before[encodeMetric])
	e := &EnforcementTime{
		PathSamples: path.count(), PathP50: path.quantile(0.5), PathP99: path.quantile(0.99),
		EncodeSamples: encode.count(), EncodeP50: encode.quantile(0.5), EncodeP99: encode.quantile(0.99),
	}
	e.AddedP99 = e.PathP99 + e.EncodeP99
	for _, v := range []*float64{&e.PathP50, &e.PathP99, &e.EncodeP50, &e.EncodeP99, &e.AddedP99} {
		if math.IsInf(*v, 1) {
			*v = -1 // JSON has no infinity
		}
	}
	if e.PathP99 < 0 || e.EncodeP99 < 0 {
		e.AddedP99 = -1
	}
	return e
}
