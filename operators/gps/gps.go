package gps

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.bug.st/serial"

	"github.com/veil-iot/veil/operators/agent"
)

// Source opens the stream of NMEA text (a serial port, or a simulation).
type Source interface {
	Open() (io.ReadCloser, error)
}

// Serial is a receiver on a serial port, 8N1.
type Serial struct {
	Port string // e.g. /dev/serial0, /dev/ttyAMA0, /dev/ttyUSB0
	Baud int    // e.g. 9600
}

// Open implements Source.
func (s Serial) Open() (io.ReadCloser, error) {
	p, err := serial.Open(s.Port, &serial.Mode{BaudRate: s.Baud, DataBits: 8, Parity: serial.NoParity, StopBits: serial.OneStopBit})
	if err != nil {
		return nil, fmt.Errorf("gps: open %s at %d baud: %w (enable_uart=1? console off the UART?)", s.Port, s.Baud, err)
	}
	return p, nil
}

// Fix is the published payload.
type Fix struct {
	Lat float64  `json:"lat"`
	Lon float64  `json:"lon"`
	Alt *float64 `json:"alt,omitempty"`
	Fix int      `json:"fix"` // GGA fix quality: 1 GPS, 2 DGPS, 4 RTK fixed, 5 RTK float, 6 estimated
	TS  agent.TS `json:"ts"`
}

// Tracker keeps the latest fix from GGA and RMC sentences.
type Tracker struct {
	mu   sync.Mutex
	fix  Fix
	at   time.Time // when the fix was last updated (zero: none)
	lost bool
}

// Feed takes one line. It returns the parse error, if any (ErrIgnored for
// sentence types not used).
func (t *Tracker) Feed(line string, now time.Time) error {
	s, err := Parse(line)
	t.mu.Lock()
	defer t.mu.Unlock()
	if errors.Is(err, ErrNoFix) {
		t.lost = true
		return err
	}
	if err != nil {
		return err
	}
	t.lost = false
	f := Fix{Lat: round(s.Lat, 7), Lon: round(s.Lon, 7), Fix: s.Quality, TS: agent.TS(now)}
	if s.Type == "RMC" {
		// RMC has no altitude nor quality: keep those from a recent GGA.
		if !t.at.IsZero() && now.Sub(t.at) < 2*time.Second {
			f.Alt, f.Fix = t.fix.Alt, t.fix.Fix
		}
	} else if s.HasAlt {
		a := round(s.Alt, 1)
		f.Alt = &a
	}
	t.fix, t.at = f, now
	return nil
}

// Latest returns the fix if one arrived within maxAge and the receiver has
// not reported losing it since.
func (t *Tracker) Latest(now time.Time, maxAge time.Duration) (Fix, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.at.IsZero() || t.lost || now.Sub(t.at) > maxAge {
		return Fix{}, false
	}
	return t.fix, true
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// Device is the gps operator.
type Device struct {
	Source   Source
	Interval time.Duration // how often the latest fix is published
	Log      zerolog.Logger
}

// Enrolment implements agent.Device.
func (d *Device) Enrolment() agent.Enrolment {
	return agent.Enrolment{Kind: "sensor", Streams: []string{"location"}}
}

// Run implements agent.Device: read sentences continuously (reopening the
// port with backoff if it fails), publish the latest fix every Interval.
func (d *Device) Run(ctx context.Context, out agent.Output) error {
	tr := &Tracker{}
	go d.read(ctx, tr)
	t := time.NewTicker(d.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-t.C:
			if f, ok := tr.Latest(now, max(2*d.Interval, 5*time.Second)); ok {
				out.Data("location", f)
			} else {
				d.Log.Debug().Msg("no fix")
			}
		}
	}
}

func (d *Device) read(ctx context.Context, tr *Tracker) {
	delay := time.Second
	for ctx.Err() == nil {
		rc, err := d.Source.Open()
		if err != nil {
			d.Log.Error().Err(err).Dur("retry_in", delay).Msg("gps source")
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			delay = min(2*delay, time.Minute)
			continue
		}
		delay = time.Second
		stop := context.AfterFunc(ctx, func() { rc.Close() })
		sc := bufio.NewScanner(rc)
		bad := 0
		for sc.Scan() {
			err := tr.Feed(sc.Text(), time.Now())
			if errors.Is(err, ErrChecksum) || errors.Is(err, ErrMalformed) {
				bad++
				if bad%20 == 1 {
					d.Log.Warn().Err(err).Int("rejected", bad).Msg("bad NMEA sentence (wrong baud rate or noise?)")
				}
			}
		}
		stop()
		rc.Close()
		if ctx.Err() == nil {
			d.Log.Warn().Err(sc.Err()).Msg("gps stream ended; reopening")
		}
	}
}
