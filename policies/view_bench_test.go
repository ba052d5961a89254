package policies

import (
	"encoding/json"
	"testing"
)

// benchReading is a typical ~200-byte sensor reading.
var benchReading = []byte(`{"ts":"2026-11-25T21:00:00.123Z","temperature":21.37,"humidity":40.2,"pressure":1013.25,` +
	`"battery":3.71,"rssi":-67,"seq":184467,"device":"th-kitchen-01","fw":"1.4.2","status":"ok","flags":[1,0,0]}`)

// BenchmarkViewApply measures the per-subscriber rewrite on the hot path of
// a fan-out: a reading with two accuracy constraints.
func BenchmarkViewApply(b *testing.B) {
	v := mustView(b, testKey, accuracy("temperature", 0.5), accuracy("humidity", 1))
	b.ReportAllocs()
	b.SetBytes(int64(len(benchReading)))
	for b.Loop() {
		if _, err := v.Apply(benchReading); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParsePayload measures the once-per-message half of a fan-out:
// parsing and validating the same reading into a Payload.
func BenchmarkParsePayload(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchReading)))
	for b.Loop() {
		if _, err := ParsePayload(benchReading); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkViewRender measures the once-per-view half: rendering the parsed
// reading under the two accuracy constraints of BenchmarkViewApply.
func BenchmarkViewRender(b *testing.B) {
	v := mustView(b, testKey, accuracy("temperature", 0.5), accuracy("humidity", 1))
	p, err := ParsePayload(benchReading)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(benchReading)))
	for b.Loop() {
		if _, err := v.Render(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkViewApplyAllKinds adds geo, pseudonymize and drop, to show what
// the heavier constraints (an HMAC per message) cost.
func BenchmarkViewApplyAllKinds(b *testing.B) {
	v := mustView(b, testKey, accuracy("temperature", 0.5), geo("lat", "lon", 1000), pseudo("device"), drop("fw"))
	in := []byte(`{"ts":"2026-11-25T21:00:00.123Z","temperature":21.37,"lat":48.7758,"lon":9.1829,` +
		`"device":"th-kitchen-01","fw":"1.4.2","battery":3.71}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		if _, err := v.Apply(in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkViewBaselineJSONValid is a yardstick for noisy machines: only
// validating the same reading with encoding/json. Apply does that much work
// and then rewrites; compare the two rather than absolute numbers.
func BenchmarkViewBaselineJSONValid(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchReading)))
	for b.Loop() {
		if !json.Valid(benchReading) {
			b.Fatal("invalid reading")
		}
	}
}
