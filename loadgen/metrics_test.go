package loadgen

import (
	"context"
	"math"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// TestEnforcementTimeFromMetrics scrapes real Prometheus histograms (the
// broker's names and buckets) before and after observations and checks the
// percentiles are the buckets' upper bounds of the new observations only.
func TestEnforcementTimeFromMetrics(t *testing.T) {
	buckets := []float64{10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6}
	path := prometheus.NewHistogram(prometheus.HistogramOpts{Name: publishPathMetric, Buckets: buckets})
	encode := prometheus.NewHistogram(prometheus.HistogramOpts{Name: encodeMetric, Buckets: buckets})
	reg := prometheus.NewRegistry()
	reg.MustRegister(path, encode)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	ctx := context.Background()

	for range 50 {
		path.Observe(400e-6) // before the run: must not count
	}
	before, err := scrapeHistograms(ctx, srv.URL, publishPathMetric, encodeMetric)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		switch {
		case i < 60:
			path.Observe(15e-6)
		case i < 99:
			path.Observe(40e-6)
		default:
			path.Observe(150e-6)
		}
		encode.Observe(3e-6)
	}
	after, err := scrapeHistograms(ctx, srv.URL, publishPathMetric, encodeMetric)
	if err != nil {
		t.Fatal(err)
	}
	got := enforcementTime(before, after)
	want := EnforcementTime{PathSamples: 100, PathP50: 20, PathP99: 50, EncodeSamples: 100, EncodeP50: 10, EncodeP99: 10, AddedP99: 60}
	if *got != want {
		t.Fatalf("got %+v\nwant %+v", *got, want)
	}

	path.Observe(2) // beyond the largest bucket
	for range 10 {
		encode.Observe(1)
	}
	end, err := scrapeHistograms(ctx, srv.URL, publishPathMetric, encodeMetric)
	if err != nil {
		t.Fatal(err)
	}
	if got := enforcementTime(after, end); got.PathP99 != -1 || got.AddedP99 != -1 || got.EncodeP50 != -1 {
		t.Fatalf("observations beyond the largest bucket: %+v, want -1 percentiles", *got)
	}
}

func TestScrapeHistogramsErrors(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: publishPathMetric}))
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	for _, tc := range []struct{ url, want string }{
		{srv.URL, "no histogram " + publishPathMetric},
		{srv.URL + "/nothing-here\x7f", "--metrics"},
		{"http://127.0.0.1:1/metrics", "--metrics http://127.0.0.1:1/metrics"},
	} {
		_, err := scrapeHistograms(context.Background(), tc.url, publishPathMetric)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("scrape %q: error %v, want one containing %q", tc.url, err, tc.want)
		}
	}
}

func TestHistogramQuantileEmpty(t *testing.T) {
	if q := (histogram{math.Inf(1): 0}).quantile(0.99); q != 0 {
		t.Fatalf("quantile of nothing = %g, want 0", q)
	}
}

func TestReportEnforcementTarget(t *testing.T) {
	mk := func(broker string, p99 float64, e *EnforcementTime) Result {
		return Result{Broker: broker, Scenario: FanOut, Tag: TagHalf, Sent: 1000, Delivered: 20000, RateTarget: 500,
			Latency: Latency{Samples: 20000, P50: 1000, P95: 2000, P99: p99, Max: 9000}, Views: []string{"raw=20"}, OK: true, Enforcement: e}
	}
	out := Report([]Result{
		mk("veil", 5000, &EnforcementTime{PathSamples: 300, PathP50: 30, PathP99: 150, EncodeSamples: 900, EncodeP50: 1, EncodeP99: 10, AddedP99: 160}),
		mk("veil", 5200, &EnforcementTime{PathSamples: 310, PathP50: 30, PathP99: 100, EncodeSamples: 900, EncodeP50: 1, EncodeP99: 5, AddedP99: 105}),
		mk("mochi", 4900, nil), mk("mochi", 5100, nil),
	}, "")
	for _, want := range []string{
		"p99 of the time enforcement adds to a delivery ≤ 200 µs | ≤ 160 µs (worst of 2 runs, 610 sampled fan-outs) | met",
		"| fanout | 0 | 610 | 30 | 125 | 1 | 8 | 160 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

func TestPublishSpanFromMetrics(t *testing.T) {
	span := prometheus.NewHistogram(prometheus.HistogramOpts{Name: publishSpanMetric, Buckets: []float64{25e-6, 50e-6, 75e-6, 100e-6}})
	reg := prometheus.NewRegistry()
	reg.MustRegister(span)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	scrape := func() map[string]histogram {
		h, err := scrapeHistograms(context.Background(), srv.URL, publishSpanMetric)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	before := scrape()
	for i := range 200 {
		span.Observe(float64(30+i%10) * 1e-6) // 30–39 µs
	}
	span.Observe(90e-6)
	span.Observe(95e-6)
	span.Observe(99e-6)
	got := publishSpan(before, scrape())
	if want := (PublishSpan{Samples: 203, P50: 50, P99: 100}); *got != want {
		t.Fatalf("got %+v, want %+v", *got, want)
	}
}

func TestReportSpanTarget(t *testing.T) {
	mk := func(broker string, p99 float64) Result {
		return Result{Broker: broker, Scenario: FanIn, Tag: TagHalf, Sent: 1000, Delivered: 1000, RateTarget: 500,
			Latency: Latency{Samples: 1000, P50: 1000, P95: 2000, P99: 5000, Max: 9000}, Views: []string{"raw=1"}, OK: true,
			PublishSpan: &PublishSpan{Samples: 500, P50: 25, P99: p99}}
	}
	out := Report([]Result{mk("veil", 150), mk("veil", 175), mk("veil", 300), mk("mochi", 100), mk("mochi", 125), mk("mochi", 150)}, "")
	for _, want := range []string{
		"publish span p99, Veil − mochi ≤ 200 µs | +50 µs (Veil 175, mochi 125; mochi's own p99 over 3 runs: 100–150 µs) | met",
		"| fanin | 0 | veil | 1500 | 25 | 175 | 150–300 |",
		"| fanin | 0 | mochi | 1500 | 25 | 125 | 100–150 |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}
