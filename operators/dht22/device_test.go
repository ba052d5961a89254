package dht22

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"
)

type recorder struct {
	mu   sync.Mutex
	data map[string][]string
}

func (r *recorder) Data(stream string, v any) {
	b, _ := json.Marshal(v)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.data == nil {
		r.data = map[string][]string{}
	}
	r.data[stream] = append(r.data[stream], string(b))
}
func (r *recorder) State(any)     {}
func (r *recorder) Thing() string { return "th-1" }

// failing fails every read: nothing may be published.
type failing struct{}

func (failing) Read() (Reading, error) { return Reading{}, ErrImplausible }

func TestDevicePublishesBothStreamsWithOneTS(t *testing.T) {
	rec := &recorder{}
	d := &Device{Sensor: &Simulated{}, Interval: 50 * time.Millisecond, Pause: time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := d.Run(ctx, rec); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	temps, hums := rec.data["temperature"], rec.data["humidity"]
	if len(temps) < 2 || len(temps) != len(hums) {
		t.Fatalf("%d temperatures, %d humidities", len(temps), len(hums))
	}
	var tv struct {
		Temperature float64 `json:"temperature"`
		TS          string  `json:"ts"`
	}
	var hv struct {
		Humidity float64 `json:"humidity"`
		TS       string  `json:"ts"`
	}
	_ = json.Unmarshal([]byte(temps[0]), &tv)
	_ = json.Unmarshal([]byte(hums[0]), &hv)
	if tv.TS == "" || tv.TS != hv.TS || tv.Temperature == 0 || hv.Humidity == 0 {
		t.Fatalf("payloads %s and %s", temps[0], hums[0])
	}
}

func TestDeviceNeverPublishesFailedReads(t *testing.T) {
	rec := &recorder{}
	d := &Device{Sensor: failing{}, Interval: 20 * time.Millisecond, Attempts: 2, Pause: time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	if err := d.Run(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if len(rec.data) != 0 {
		t.Fatalf("failed reads were published: %v", rec.data)
	}
}

// timedFlaky fails every other read and records when each read happened.
type timedFlaky struct {
	mu    sync.Mutex
	n     int
	reads []time.Time
}

func (s *timedFlaky) Read() (Reading, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	s.reads = append(s.reads, time.Now())
	if s.n%2 == 1 {
		return Reading{}, ErrImplausible
	}
	return Reading{Temperature: 20 + float64(s.n)/10, Humidity: 45}, nil
}

// A read that needed a retry pause longer than the interval must not be
// followed at once by the next one: that is too soon for the sensor, and
// the two readings could carry the same millisecond timestamp.
func TestDeviceKeepsItsIntervalAfterARetry(t *testing.T) {
	const interval, pause = 40 * time.Millisecond, 60 * time.Millisecond
	s := &timedFlaky{}
	rec := &recorder{}
	d := &Device{Sensor: s, Interval: interval, Attempts: 2, Pause: pause}
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	if err := d.Run(ctx, rec); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reads) < 4 {
		t.Fatalf("only %d reads in 600 ms", len(s.reads))
	}
	for i := 1; i < len(s.reads); i++ {
		if gap := s.reads[i].Sub(s.reads[i-1]); gap < interval {
			t.Errorf("read %d came %v after the one before, want at least %v", i, gap, interval)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	seen := map[string]bool{}
	for _, p := range rec.data["temperature"] {
		var v struct {
			TS string `json:"ts"`
		}
		_ = json.Unmarshal([]byte(p), &v)
		if seen[v.TS] {
			t.Errorf("two readings at %s", v.TS)
		}
		seen[v.TS] = true
	}
}
