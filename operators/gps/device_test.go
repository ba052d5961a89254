package gps

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"
)

type recorder struct {
	mu   sync.Mutex
	data map[string][][]byte
}

func (r *recorder) Data(stream string, v any) {
	b, _ := json.Marshal(v)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.data == nil {
		r.data = map[string][][]byte{}
	}
	r.data[stream] = append(r.data[stream], b)
}
func (r *recorder) State(any)     {}
func (r *recorder) Thing() string { return "gps-1" }

func TestDeviceWithSimulatedReceiver(t *testing.T) {
	rec := &recorder{}
	d := &Device{Source: &Simulated{Period: 50 * time.Millisecond}, Interval: 100 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 600*time.Millisecond)
	defer cancel()
	if err := d.Run(ctx, rec); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.data["location"]) < 3 {
		t.Fatalf("%d fixes published, want several", len(rec.data["location"]))
	}
	var f struct {
		Lat, Lon, Alt *float64
		Fix           int
		TS            string
	}
	if err := json.Unmarshal(rec.data["location"][0], &f); err != nil {
		t.Fatal(err)
	}
	if f.Lat == nil || f.Lon == nil || f.Alt == nil || f.Fix != 1 || f.TS == "" {
		t.Fatalf("fix %s lacks lat, lon, alt, fix or ts", rec.data["location"][0])
	}
	if *f.Lat < 48.77 || *f.Lat > 48.79 || *f.Lon < 9.16 || *f.Lon > 9.20 {
		t.Fatalf("simulated fix %v,%v is not near the Schlossplatz", *f.Lat, *f.Lon)
	}
}
