// Package gps reads a GNSS receiver's NMEA 0183 sentences from a serial
// port (enable_uart=1; /dev/serial0 at 9600 baud on most modules) and
// publishes fixes as {"lat","lon","alt","fix"}.
package gps

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Errors of a sentence.
var (
	ErrChecksum  = errors.New("NMEA checksum mismatch")
	ErrMalformed = errors.New("malformed NMEA sentence")
	ErrNoFix     = errors.New("no fix")
	ErrIgnored   = errors.New("sentence type not used")
)

// Sentence is a decoded GGA or RMC sentence.
type Sentence struct {
	Type    string  // "GGA" or "RMC"
	Talker  string  // GP, GN, GL, GA, BD …
	Time    string  // hhmmss.ss UTC
	Lat     float64 // degrees, north positive
	Lon     float64 // degrees, east positive
	Alt     float64 // metres above mean sea level (GGA only)
	HasAlt  bool
	Quality int // GGA fix quality (1 GPS, 2 DGPS, 4 RTK, 5 float RTK, 6 estimated …); RMC: 1 when status A
	Sats    int // GGA satellites in use
}

// Checksum is the XOR of the bytes between '$' and '*'.
func Checksum(body string) byte {
	var x byte
	for i := 0; i < len(body); i++ {
		x ^= body[i]
	}
	return x
}

// Parse verifies the checksum of one sentence ("$GPGGA,…*47") and decodes a
// GGA or RMC. A sentence without a fix returns ErrNoFix; other types
// ErrIgnored.
func Parse(line string) (Sentence, error) {
	line = strings.TrimRight(line, "\r\n")
	if !strings.HasPrefix(line, "$") {
		return Sentence{}, fmt.Errorf("%w: %q does not start with $", ErrMalformed, line)
	}
	star := strings.LastIndexByte(line, '*')
	if star < 0 || len(line)-star != 3 {
		return Sentence{}, fmt.Errorf("%w: %q has no *hh checksum", ErrMalformed, line)
	}
	body := line[1:star]
	want, err := strconv.ParseUint(line[star+1:], 16, 8)
	if err != nil {
		return Sentence{}, fmt.Errorf("%w: checksum %q is not hex", ErrMalformed, line[star+1:])
	}
	if got := Checksum(body); got != byte(want) {
		return Sentence{}, fmt.Errorf("%w: computed %02X, sentence says %02X", ErrChecksum, got, want)
	}
	f := strings.Split(body, ",")
	if len(f[0]) != 5 {
		return Sentence{}, fmt.Errorf("%w: address %q", ErrMalformed, f[0])
	}
	s := Sentence{Talker: f[0][:2], Type: f[0][2:]}
	switch s.Type {
	case "GGA":
		// GGA,time,lat,N,lon,E,quality,sats,hdop,alt,M,sep,M,age,station
		if len(f) < 15 {
			return s, fmt.Errorf("%w: GGA has %d fields, want 15", ErrMalformed, len(f))
		}
		s.Time = f[1]
		if f[6] == "" || f[6] == "0" {
			return s, ErrNoFix
		}
		if s.Quality, err = strconv.Atoi(f[6]); err != nil {
			return s, fmt.Errorf("%w: GGA quality %q", ErrMalformed, f[6])
		}
		if f[7] != "" {
			s.Sats, _ = strconv.Atoi(f[7])
		}
		if s.Lat, s.Lon, err = position(f[2], f[3], f[4], f[5]); err != nil {
			return s, err
		}
		if f[9] != "" {
			if s.Alt, err = strconv.ParseFloat(f[9], 64); err != nil {
				return s, fmt.Errorf("%w: GGA altitude %q", ErrMalformed, f[9])
			}
			s.HasAlt = true
		}
	case "RMC":
		// RMC,time,status,lat,N,lon,E,speed,course,date,magvar,E[,mode[,navstatus]]
		if len(f) < 12 {
			return s, fmt.Errorf("%w: RMC has %d fields, want at least 12", ErrMalformed, len(f))
		}
		s.Time = f[1]
		if f[2] != "A" {
			return s, ErrNoFix
		}
		if len(f) >= 13 && f[12] == "N" { // mode indicator: data not valid
			return s, ErrNoFix
		}
		s.Quality = 1
		if s.Lat, s.Lon, err = position(f[3], f[4], f[5], f[6]); err != nil {
			return s, err
		}
	default:
		return s, ErrIgnored
	}
	return s, nil
}

// position converts ddmm.mmmm / dddmm.mmmm with hemispheres to degrees.
func position(lat, ns, lon, ew string) (float64, float64, error) {
	la, err := degrees(lat, 2)
	if err != nil || la > 90 || (ns != "N" && ns != "S") {
		return 0, 0, fmt.Errorf("%w: latitude %q %q", ErrMalformed, lat, ns)
	}
	lo, err := degrees(lon, 3)
	if err != nil || lo > 180 || (ew != "E" && ew != "W") {
		return 0, 0, fmt.Errorf("%w: longitude %q %q", ErrMalformed, lon, ew)
	}
	if ns == "S" {
		la = -la
	}
	if ew == "W" {
		lo = -lo
	}
	return la, lo, nil
}

func degrees(v string, degDigits int) (float64, error) {
	if len(v) < degDigits+2 || strings.IndexByte(v, '.') != degDigits+2 && strings.IndexByte(v, '.') != -1 {
		return 0, fmt.Errorf("bad coordinate %q", v)
	}
	d, err := strconv.Atoi(v[:degDigits])
	if err != nil {
		return 0, err
	}
	m, err := strconv.ParseFloat(v[degDigits:], 64)
	if err != nil || m >= 60 || m < 0 {
		return 0, fmt.Errorf("bad minutes in %q", v)
	}
	return float64(d) + m/60, nil
}

// Format renders a sentence body with its checksum: "$" + body + "*hh\r\n".
func Format(body string) string {
	return fmt.Sprintf("$%s*%02X\r\n", body, Checksum(body))
}
