package gps

import (
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"time"
)

// Simulated is a receiver carried around Stuttgart's Schlossplatz at walking
// pace: it writes GGA and RMC sentences once a second with genuine
// checksums (and, like real receivers, a GSV now and then that is ignored),
// so the simulation runs through the same parser.
type Simulated struct {
	Lat, Lon float64       // centre of the walk (default 48.7784, 9.1800)
	Period   time.Duration // time between sentence bursts (default 1 s)
}

// Open implements Source.
func (s *Simulated) Open() (io.ReadCloser, error) {
	lat, lon := s.Lat, s.Lon
	if lat == 0 && lon == 0 {
		lat, lon = 48.7784, 9.1800
	}
	period := s.Period
	if period <= 0 {
		period = time.Second
	}
	pr, pw := io.Pipe()
	go func() {
		t := time.NewTicker(period)
		defer t.Stop()
		start := time.Now()
		for now := range t.C {
			// A 150 m circle every 10 minutes, with 2 m of noise.
			a := now.Sub(start).Seconds() / 600 * 2 * math.Pi
			la := lat + (150*math.Sin(a)+rand.NormFloat64()*2)/111_320
			lo := lon + (150*math.Cos(a)+rand.NormFloat64()*2)/(111_320*math.Cos(lat*math.Pi/180))
			alt := 245 + rand.NormFloat64()*1.5
			text := GGA(now, la, lo, alt, 1, 9) + RMC(now, la, lo) + Format("GPGSV,3,1,09,05,42,115,38,13,71,062,41,15,31,294,35,18,22,176,30")
			if _, err := io.WriteString(pw, text); err != nil {
				return // closed by the reader
			}
		}
	}()
	return pr, nil
}

// GGA renders a GGA sentence for a fix.
func GGA(t time.Time, lat, lon, alt float64, quality, sats int) string {
	la, ns := nmeaCoord(lat, 2, "N", "S")
	lo, ew := nmeaCoord(lon, 3, "E", "W")
	return Format(fmt.Sprintf("GPGGA,%s,%s,%s,%s,%s,%d,%02d,0.9,%.1f,M,47.9,M,,", t.UTC().Format("150405.00"), la, ns, lo, ew, quality, sats, alt))
}

// RMC renders a valid RMC sentence for a fix.
func RMC(t time.Time, lat, lon float64) string {
	la, ns := nmeaCoord(lat, 2, "N", "S")
	lo, ew := nmeaCoord(lon, 3, "E", "W")
	u := t.UTC()
	return Format(fmt.Sprintf("GPRMC,%s,A,%s,%s,%s,%s,0.8,54.7,%s,,,A", u.Format("150405.00"), la, ns, lo, ew, u.Format("020106")))
}

func nmeaCoord(v float64, degDigits int, pos, neg string) (string, string) {
	h := pos
	if v < 0 {
		v, h = -v, neg
	}
	d := math.Floor(v)
	m := (v - d) * 60
	return fmt.Sprintf("%0*d%07.4f", degDigits, int(d), m), h
}
