// Package cpu reports the Raspberry Pi's own health: the SoC temperature
// (/sys/class/thermal/thermal_zone0/temp, milli-degrees Celsius) and the
// load averages (/proc/loadavg).
package cpu

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/operators/agent"
)

// Reading is one sample.
type Reading struct {
	Temperature          float64 // °C
	Load1, Load5, Load15 float64
}

// Sampler reads the system (or simulates it).
type Sampler interface {
	Sample() (Reading, error)
}

// Paths of the real files.
const (
	DefaultThermal = "/sys/class/thermal/thermal_zone0/temp"
	DefaultLoadavg = "/proc/loadavg"
)

// System reads the kernel's files.
type System struct {
	Thermal, Loadavg string
}

// Sample implements Sampler.
func (s System) Sample() (Reading, error) {
	tb, err := os.ReadFile(s.Thermal)
	if err != nil {
		return Reading{}, fmt.Errorf("cpu: %w", err)
	}
	lb, err := os.ReadFile(s.Loadavg)
	if err != nil {
		return Reading{}, fmt.Errorf("cpu: %w", err)
	}
	t, err := ParseThermal(string(tb))
	if err != nil {
		return Reading{}, err
	}
	l1, l5, l15, err := ParseLoadavg(string(lb))
	if err != nil {
		return Reading{}, err
	}
	return Reading{Temperature: t, Load1: l1, Load5: l5, Load15: l15}, nil
}

// ParseThermal parses a thermal zone's temp ("48312\n" → 48.312 °C).
func ParseThermal(s string) (float64, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cpu: thermal value %q is not an integer", s)
	}
	c := float64(n) / 1000
	if c < -40 || c > 150 {
		return 0, fmt.Errorf("cpu: thermal value %.3f °C is implausible", c)
	}
	return c, nil
}

// ParseLoadavg parses /proc/loadavg ("0.52 0.58 0.59 1/372 12345").
func ParseLoadavg(s string) (l1, l5, l15 float64, err error) {
	f := strings.Fields(s)
	if len(f) < 3 {
		return 0, 0, 0, fmt.Errorf("cpu: loadavg %q: want at least 3 fields", strings.TrimSpace(s))
	}
	var v [3]float64
	for i := range v {
		if v[i], err = strconv.ParseFloat(f[i], 64); err != nil || v[i] < 0 {
			return 0, 0, 0, fmt.Errorf("cpu: loadavg field %d %q is not a load", i+1, f[i])
		}
	}
	return v[0], v[1], v[2], nil
}

// Simulated is a Pi 4 idling with the occasional burst of work.
type Simulated struct{ load float64 }

// Sample implements Sampler.
func (s *Simulated) Sample() (Reading, error) {
	if rand.Float64() < 0.1 {
		s.load += 1.5
	}
	s.load *= 0.8
	l := 0.15 + s.load + rand.Float64()*0.05
	t := 42 + 6*l + rand.NormFloat64()*0.4
	r2 := func(v float64) float64 { return math.Round(v*100) / 100 }
	return Reading{Temperature: math.Round(t*1000) / 1000, Load1: r2(l), Load5: r2(l * 0.7), Load15: r2(l * 0.5)}, nil
}

// Payload is the published "cpu" stream.
type Payload struct {
	Temperature float64  `json:"temperature"`
	Load1       float64  `json:"load1"`
	Load5       float64  `json:"load5"`
	Load15      float64  `json:"load15"`
	TS          agent.TS `json:"ts"`
}

// Device is the cpu operator.
type Device struct {
	Sampler  Sampler
	Interval time.Duration
	Log      zerolog.Logger
}

// Enrolment implements agent.Device.
func (d *Device) Enrolment() agent.Enrolment {
	return agent.Enrolment{Kind: "sensor", Streams: []string{"cpu"}}
}

// Run implements agent.Device.
func (d *Device) Run(ctx context.Context, out agent.Output) error {
	t := time.NewTicker(d.Interval)
	defer t.Stop()
	for {
		r, err := d.Sampler.Sample()
		if err != nil {
			d.Log.Warn().Err(err).Msg("no sample this time")
		} else {
			out.Data("cpu", Payload{Temperature: math.Round(r.Temperature*10) / 10, Load1: r.Load1, Load5: r.Load5, Load15: r.Load15, TS: agent.TS(time.Now())})
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
