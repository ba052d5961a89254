// Package ds18b20 reads a DS18B20 temperature probe over 1-Wire
// (dtoverlay=w1-gpio,gpiopin=N): the kernel's w1_therm driver exposes
// /sys/bus/w1/devices/28-*/w1_slave, two lines holding the scratchpad, the
// driver's CRC verdict and the temperature in milli-degrees Celsius.
package ds18b20

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/operators/agent"
)

// DefaultW1Dir is where the kernel lists 1-Wire devices.
const DefaultW1Dir = "/sys/bus/w1/devices"

// Errors a w1_slave text can carry.
var (
	ErrCRC        = errors.New("scratchpad CRC mismatch")
	ErrPowerOn    = errors.New("power-on reset value 85 °C: conversion did not run")
	ErrNoDevice   = errors.New("scratchpad all zeros or all ones: probe disconnected")
	ErrMalformed  = errors.New("malformed w1_slave text")
	ErrOutOfRange = errors.New("temperature outside -55…125 °C")
)

// CRC8 is the Dallas/Maxim 1-Wire CRC (polynomial x^8+x^5+x^4+1, reflected).
func CRC8(data []byte) byte {
	var crc byte
	for _, b := range data {
		for i := 0; i < 8; i++ {
			mix := (crc ^ b) & 1
			crc >>= 1
			if mix != 0 {
				crc ^= 0x8C
			}
			b >>= 1
		}
	}
	return crc
}

// Parse reads a w1_slave text and returns the temperature in °C. It checks
// the CRC itself (not only the driver's YES) and computes the temperature
// from the scratchpad, cross-checked with the driver's t=.
func Parse(text string) (float64, error) {
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) != 2 {
		return 0, fmt.Errorf("%w: want 2 lines, got %d", ErrMalformed, len(lines))
	}
	l1, l2 := strings.TrimSpace(lines[0]), strings.TrimSpace(lines[1])
	// Line 1: "72 01 4b 46 7f ff 0e 10 57 : crc=57 YES"
	head, verdict, ok := strings.Cut(l1, " : crc=")
	if !ok {
		return 0, fmt.Errorf("%w: line 1 %q has no crc", ErrMalformed, l1)
	}
	pad, err := hex.DecodeString(strings.ReplaceAll(head, " ", ""))
	if err != nil || len(pad) != 9 {
		return 0, fmt.Errorf("%w: line 1 scratchpad %q", ErrMalformed, head)
	}
	f := strings.Fields(verdict)
	if len(f) != 2 {
		return 0, fmt.Errorf("%w: line 1 verdict %q", ErrMalformed, verdict)
	}
	allSame := true
	for _, b := range pad {
		allSame = allSame && b == pad[0]
	}
	if allSame && (pad[0] == 0 || pad[0] == 0xff) {
		return 0, ErrNoDevice
	}
	if got := CRC8(pad[:8]); got != pad[8] || f[1] != "YES" {
		return 0, fmt.Errorf("%w: computed %02x, scratchpad %02x, driver says %s", ErrCRC, got, pad[8], f[1])
	}
	// Line 2: the scratchpad again, then "t=23125".
	_, tv, ok := strings.Cut(l2, "t=")
	if !ok {
		return 0, fmt.Errorf("%w: line 2 %q has no t=", ErrMalformed, l2)
	}
	milli, err := strconv.Atoi(strings.TrimSpace(tv))
	if err != nil {
		return 0, fmt.Errorf("%w: t=%q", ErrMalformed, tv)
	}
	raw := int16(uint16(pad[0]) | uint16(pad[1])<<8)
	c := float64(raw) / 16
	if math.Abs(c*1000-float64(milli)) > 1 {
		return 0, fmt.Errorf("%w: t=%d disagrees with the scratchpad (%.4f °C)", ErrMalformed, milli, c)
	}
	if raw == 0x0550 && pad[6] == 0x0c {
		return 0, ErrPowerOn
	}
	if c < -55 || c > 125 {
		return 0, fmt.Errorf("%w: %.3f", ErrOutOfRange, c)
	}
	return c, nil
}

// Probe is a source of w1_slave texts.
type Probe interface {
	ReadText() (string, error)
}

// Sysfs reads one probe's w1_slave file.
type Sysfs struct{ Path string }

// ReadText implements Probe.
func (s Sysfs) ReadText() (string, error) {
	b, err := os.ReadFile(s.Path)
	return string(b), err
}

// Find returns the w1_slave file of the probe with the given id (28-…),
// or of the first DS18B20 under base if id is empty.
func Find(base, id string) (string, error) {
	if id != "" {
		p := filepath.Join(base, id, "w1_slave")
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("ds18b20: %w", err)
		}
		return p, nil
	}
	m, _ := filepath.Glob(filepath.Join(base, "28-*", "w1_slave"))
	if len(m) == 0 {
		return "", fmt.Errorf("ds18b20: no 28-* device under %s (is dtoverlay=w1-gpio,gpiopin=N in /boot/firmware/config.txt?)", base)
	}
	return m[0], nil
}

// Simulated is a probe in a room, rendering genuine w1_slave texts (with a
// correct CRC) so the simulation runs through the same parser.
type Simulated struct {
	Now func() time.Time
}

// ReadText implements Probe.
func (s *Simulated) ReadText() (string, error) {
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	hour := float64(now.Hour()) + float64(now.Minute())/60
	c := 19.5 + 1.2*math.Sin((hour-9)/24*2*math.Pi) + rand.NormFloat64()*0.05
	return Render(c), nil
}

// Render is the w1_slave text the driver writes for temperature c.
func Render(c float64) string {
	raw := uint16(int16(math.Round(c * 16)))
	pad := []byte{byte(raw), byte(raw >> 8), 0x4b, 0x46, 0x7f, 0xff, 0x0c, 0x10, 0}
	pad[8] = CRC8(pad[:8])
	h := make([]string, 9)
	for i, b := range pad {
		h[i] = fmt.Sprintf("%02x", b)
	}
	hs := strings.Join(h, " ")
	return fmt.Sprintf("%s : crc=%02x YES\n%s t=%d\n", hs, pad[8], hs, int(int16(raw))*1000/16)
}

// Temperature is the published payload.
type Temperature struct {
	Temperature float64  `json:"temperature"`
	TS          agent.TS `json:"ts"`
}

// Device is the ds18b20 operator.
type Device struct {
	Probe    Probe
	Interval time.Duration
	Attempts int // reads per reading before giving up (default 3)
	Log      zerolog.Logger
}

// Enrolment implements agent.Device.
func (d *Device) Enrolment() agent.Enrolment {
	return agent.Enrolment{Kind: "sensor", Streams: []string{"temperature"}}
}

// ReadRetry reads and parses up to attempts times (a CRC error or the
// power-on value is a bus glitch worth another conversion).
func ReadRetry(ctx context.Context, p Probe, attempts int, pause time.Duration) (float64, error) {
	var last error
	for i := 0; i < max(attempts, 1); i++ {
		text, err := p.ReadText()
		if err == nil {
			var c float64
			if c, err = Parse(text); err == nil {
				return c, nil
			}
		}
		last = err
		if i+1 < attempts {
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(pause):
			}
		}
	}
	return 0, fmt.Errorf("ds18b20: %d attempts failed, last: %w", max(attempts, 1), last)
}

// Run implements agent.Device.
func (d *Device) Run(ctx context.Context, out agent.Output) error {
	attempts := d.Attempts
	if attempts <= 0 {
		attempts = 3
	}
	t := time.NewTicker(d.Interval)
	defer t.Stop()
	for {
		c, err := ReadRetry(ctx, d.Probe, attempts, 500*time.Millisecond)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			d.Log.Warn().Err(err).Msg("no reading this time")
		default:
			out.Data("temperature", Temperature{Temperature: c, TS: agent.TS(time.Now())})
		}
		t.Reset(d.Interval) // no waiting tick after a slow read: see dht22
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
