// Package dht22 reads a DHT22 (AM2302) temperature and humidity sensor
// through the Linux IIO driver (dtoverlay=dht11,gpiopin=N — the dht11 driver
// also serves the DHT22): in_temp_input in milli-degrees Celsius and
// in_humidityrelative_input in milli-percent.
package dht22

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/operators/agent"
)

// Reading is one measurement.
type Reading struct {
	Temperature float64 // °C
	Humidity    float64 // %RH
}

// Sensor reads the hardware (or simulates it).
type Sensor interface {
	Read() (Reading, error)
}

// DefaultIIODir is where the kernel lists IIO devices.
const DefaultIIODir = "/sys/bus/iio/devices"

// IIO reads the dht11 IIO driver's sysfs files.
type IIO struct {
	Dir      string                       // the device directory, e.g. /sys/bus/iio/devices/iio:device0
	ReadFile func(string) ([]byte, error) // os.ReadFile; replaceable in tests
}

// FindIIO returns the first IIO device under base whose name starts with
// "dht11" (the driver's name for both DHT11 and DHT22).
func FindIIO(base string) (string, error) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return "", fmt.Errorf("dht22: %w (is dtoverlay=dht11,gpiopin=N in /boot/firmware/config.txt?)", err)
	}
	for _, e := range entries {
		name, err := os.ReadFile(filepath.Join(base, e.Name(), "name"))
		if err == nil && strings.HasPrefix(strings.TrimSpace(string(name)), "dht11") {
			return filepath.Join(base, e.Name()), nil
		}
	}
	return "", fmt.Errorf("dht22: no dht11 IIO device under %s (is dtoverlay=dht11,gpiopin=N in /boot/firmware/config.txt?)", base)
}

// Read implements Sensor: one reading of both channels.
func (s IIO) Read() (Reading, error) {
	rf := s.ReadFile
	if rf == nil {
		rf = os.ReadFile
	}
	t, err := readMilli(rf, filepath.Join(s.Dir, "in_temp_input"))
	if err != nil {
		return Reading{}, err
	}
	h, err := readMilli(rf, filepath.Join(s.Dir, "in_humidityrelative_input"))
	if err != nil {
		return Reading{}, err
	}
	r := Reading{Temperature: t, Humidity: h}
	if err := r.Plausible(); err != nil {
		return Reading{}, err
	}
	return r, nil
}

func readMilli(rf func(string) ([]byte, error), path string) (float64, error) {
	b, err := rf(path)
	if err != nil {
		return 0, err
	}
	return ParseMilli(string(b))
}

// ParseMilli parses an IIO processed value in thousandths ("22300\n" → 22.3).
func ParseMilli(s string) (float64, error) {
	s = strings.TrimSpace(s)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("dht22: IIO value %q is not an integer", s)
	}
	return float64(n) / 1000, nil
}

// Plausible rejects values outside the DHT22's range (a garbled read that
// slipped past the driver's checksum).
func (r Reading) Plausible() error {
	if r.Temperature < -40 || r.Temperature > 80 {
		return fmt.Errorf("dht22: temperature %.1f °C outside -40…80: %w", r.Temperature, ErrImplausible)
	}
	if r.Humidity < 0 || r.Humidity > 100 {
		return fmt.Errorf("dht22: humidity %.1f %% outside 0…100: %w", r.Humidity, ErrImplausible)
	}
	return nil
}

// ErrImplausible marks a value outside the sensor's range.
var ErrImplausible = errors.New("implausible reading")

// Transient reports whether err is one of the dht11 driver's ordinary read
// failures (a missed edge, a checksum mismatch, a bus still busy), or an
// implausible value: worth a retry, never worth publishing.
func Transient(err error) bool {
	return errors.Is(err, syscall.EIO) || errors.Is(err, syscall.ETIMEDOUT) ||
		errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EBUSY) || errors.Is(err, ErrImplausible)
}

// ReadRetry reads up to attempts times, waiting pause between attempts
// after a transient error. Any other error is returned at once.
func ReadRetry(ctx context.Context, s Sensor, attempts int, pause time.Duration) (Reading, error) {
	var last error
	for i := 0; i < max(attempts, 1); i++ {
		r, err := s.Read()
		if err == nil {
			return r, nil
		}
		if !Transient(err) {
			return Reading{}, err
		}
		last = err
		if i+1 < attempts {
			select {
			case <-ctx.Done():
				return Reading{}, ctx.Err()
			case <-time.After(pause):
			}
		}
	}
	return Reading{}, fmt.Errorf("dht22: %d attempts failed, last: %w", attempts, last)
}

// Simulated is a DHT22 in a living room: a slow daily swing, noise at the
// sensor's resolution (0.1), and now and then a failed read as on real
// hardware.
type Simulated struct {
	Now       func() time.Time
	FailEvery int // every n-th read fails with EIO (0: never)
	n         int
}

// Read implements Sensor.
func (s *Simulated) Read() (Reading, error) {
	s.n++
	if s.FailEvery > 0 && s.n%s.FailEvery == 0 {
		return Reading{}, &os.PathError{Op: "read", Path: "in_temp_input", Err: syscall.EIO}
	}
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	hour := float64(now.Hour()) + float64(now.Minute())/60
	day := math.Sin((hour - 9) / 24 * 2 * math.Pi) // warmest mid-afternoon
	t := 21.0 + 1.5*day + rand.NormFloat64()*0.1
	h := 45.0 - 5*day + rand.NormFloat64()*0.5
	return Reading{Temperature: math.Round(t*10) / 10, Humidity: math.Round(h*10) / 10}, nil
}

// Temperature and Humidity are the published payloads.
type (
	Temperature struct {
		Temperature float64  `json:"temperature"`
		TS          agent.TS `json:"ts"`
	}
	Humidity struct {
		Humidity float64  `json:"humidity"`
		TS       agent.TS `json:"ts"`
	}
)

// Device is the dht22 operator.
type Device struct {
	Sensor   Sensor
	Interval time.Duration
	Attempts int           // reads per reading before giving up (default 5)
	Pause    time.Duration // between attempts (default 2 s: the driver's minimum)
	Log      zerolog.Logger
}

// Enrolment implements agent.Device.
func (d *Device) Enrolment() agent.Enrolment {
	return agent.Enrolment{Kind: "sensor", Streams: []string{"temperature", "humidity"}}
}

// Run implements agent.Device.
func (d *Device) Run(ctx context.Context, out agent.Output) error {
	attempts, pause := d.Attempts, d.Pause
	if attempts <= 0 {
		attempts = 5
	}
	if pause <= 0 {
		pause = 2 * time.Second
	}
	t := time.NewTicker(d.Interval)
	defer t.Stop()
	for {
		r, err := ReadRetry(ctx, d.Sensor, attempts, pause)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			d.Log.Warn().Err(err).Msg("no reading this time")
		default:
			ts := agent.TS(time.Now())
			out.Data("temperature", Temperature{Temperature: r.Temperature, TS: ts})
			out.Data("humidity", Humidity{Humidity: r.Humidity, TS: ts})
			d.Log.Debug().Float64("temperature", r.Temperature).Float64("humidity", r.Humidity).Msg("reading")
		}
		// A reading that took longer than the interval (failed attempts
		// and their pauses) left a tick waiting: without the reset the next
		// read would follow at once, too soon for a DHT22, and two readings
		// could share one millisecond timestamp.
		t.Reset(d.Interval)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
