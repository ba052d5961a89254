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
