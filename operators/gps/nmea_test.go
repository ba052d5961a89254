package gps

import (
	"bufio"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    Sentence
		wantErr error
	}{
		{"NMEA reference GGA", "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47",
			Sentence{Type: "GGA", Talker: "GP", Time: "123519", Lat: 48.1173, Lon: 11.516666667, Alt: 545.4, HasAlt: true, Quality: 1, Sats: 8}, nil},
		{"NMEA reference RMC", "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A",
			Sentence{Type: "RMC", Talker: "GP", Time: "123519", Lat: 48.1173, Lon: 11.516666667, Quality: 1}, nil},
		{"western hemisphere", "$GPGGA,092750.000,5321.6802,N,00630.3372,W,1,8,1.03,61.7,M,55.2,M,,*76",
			Sentence{Type: "GGA", Talker: "GP", Time: "092750.000", Lat: 53.361336667, Lon: -6.50562, Alt: 61.7, HasAlt: true, Quality: 1, Sats: 8}, nil},
		{"southern hemisphere DGPS", "$GPGGA,235947.000,3352.6219,S,15112.2510,E,2,07,1.2,39.8,M,22.1,M,0000,0000*70",
			Sentence{Type: "GGA", Talker: "GP", Time: "235947.000", Lat: -33.877031667, Lon: 151.20418333, Alt: 39.8, HasAlt: true, Quality: 2, Sats: 7}, nil},
		{"multi-GNSS talker", "$GNGGA,201502.00,4846.66410,N,00910.80210,E,1,10,0.92,251.3,M,47.9,M,,*4B",
			Sentence{Type: "GGA", Talker: "GN", Time: "201502.00", Lat: 48.777735, Lon: 9.180035, Alt: 251.3, HasAlt: true, Quality: 1, Sats: 10}, nil},
		{"no fix GGA (cold start)", "$GPGGA,,,,,,0,00,99.99,,,,,,*48", Sentence{}, ErrNoFix},
		{"no fix RMC (status V)", "$GPRMC,,V,,,,,,,,,,N*53", Sentence{}, ErrNoFix},
		{"bad checksum", "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48", Sentence{}, ErrChecksum},
		{"one digit flipped", "$GPRMC,092750.000,A,5321.6802,N,00630.3872,W,0.02,31.66,280511,,,A*43", Sentence{}, ErrChecksum},
		{"lower-case checksum accepted", "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6a",
			Sentence{Type: "RMC", Talker: "GP", Time: "123519", Lat: 48.1173, Lon: 11.516666667, Quality: 1}, nil},
		{"truncated", "$GPGGA,092750.000,5321.68", Sentence{}, ErrMalformed},
		{"no dollar", "GPGGA,123519*47", Sentence{}, ErrMalformed},
		{"satellites in view ignored", "$GPGSV,3,1,11,10,63,137,17,07,61,098,15,05,59,290,20,08,54,157,30*70", Sentence{}, ErrIgnored},
		{"latitude minutes over 60", "$GPGGA,123519,4867.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*" + hex2(Checksum("GPGGA,123519,4867.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,")), Sentence{}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.line + "\r\n")
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(got.Lat-tt.want.Lat) > 1e-6 || math.Abs(got.Lon-tt.want.Lon) > 1e-6 {
				t.Errorf("position %.9f,%.9f, want %.9f,%.9f", got.Lat, got.Lon, tt.want.Lat, tt.want.Lon)
			}
			got.Lat, got.Lon = tt.want.Lat, tt.want.Lon
			if got != tt.want {
				t.Errorf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func hex2(b byte) string { return string("0123456789ABCDEF"[b>>4]) + string("0123456789ABCDEF"[b&15]) }

// feedFile runs a captured stream through a tracker, one line a second.
func feedFile(t *testing.T, tr *Tracker, name string, start time.Time) (time.Time, map[string]int) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	errs := map[string]int{}
	now := start
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if err := tr.Feed(sc.Text(), now); err != nil {
			for _, e := range []error{ErrChecksum, ErrMalformed, ErrNoFix, ErrIgnored} {
				if errors.Is(err, e) {
					errs[e.Error()]++
				}
			}
		}
		now = now.Add(100 * time.Millisecond)
	}
	return now, errs
}

func TestTrackerCaptures(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 20, 15, 2, 0, time.UTC)
	tests := []struct {
		file     string
		wantFix  bool
		lat, lon float64
		alt      float64 // 0: none expected
		quality  int
		errs     map[string]int
	}{
		{"adafruit-ultimate-gps.nmea", true, 53.3613367, -6.50562, 61.7, 1, map[string]int{ErrIgnored.Error(): 2}},
		{"ublox-m8-stuttgart.nmea", true, 48.777735, 9.180035, 251.3, 1, map[string]int{}},
		{"ublox-neo6m-cold-start.nmea", false, 0, 0, 0, 0, map[string]int{ErrNoFix.Error(): 2, ErrIgnored.Error(): 3}},
		{"noisy-line.nmea", false, 0, 0, 0, 0, map[string]int{ErrChecksum.Error(): 2, ErrMalformed.Error(): 1}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			tr := &Tracker{}
			end, errs := feedFile(t, tr, tt.file, t0)
			for k, v := range tt.errs {
				if errs[k] != v {
					t.Errorf("%d × %q, want %d (all: %v)", errs[k], k, v, errs)
				}
			}
			f, ok := tr.Latest(end, 5*time.Second)
			if ok != tt.wantFix {
				t.Fatalf("fix = %v (%+v), want %v", ok, f, tt.wantFix)
			}
			if !ok {
				return
			}
			if math.Abs(f.Lat-tt.lat) > 1e-6 || math.Abs(f.Lon-tt.lon) > 1e-6 || f.Fix != tt.quality {
				t.Errorf("fix %+v, want %.7f,%.7f quality %d", f, tt.lat, tt.lon, tt.quality)
			}
			if f.Alt == nil || *f.Alt != tt.alt {
				t.Errorf("alt %v, want %v", f.Alt, tt.alt)
			}
		})
	}
}

func TestTrackerLosesFix(t *testing.T) {
	tr := &Tracker{}
	t0 := time.Now()
	if err := tr.Feed("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47", t0); err != nil {
		t.Fatal(err)
	}
	if _, ok := tr.Latest(t0.Add(time.Second), 5*time.Second); !ok {
		t.Fatal("no fix after a good GGA")
	}
	if _, ok := tr.Latest(t0.Add(6*time.Second), 5*time.Second); ok {
		t.Fatal("a stale fix is still reported")
	}
	_ = tr.Feed("$GPRMC,,V,,,,,,,,,,N*53", t0.Add(time.Second))
	if _, ok := tr.Latest(t0.Add(time.Second), 5*time.Second); ok {
		t.Fatal("fix still reported after the receiver said it lost it")
	}
}

func TestSimulatedSentencesParse(t *testing.T) {
	now := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	for _, line := range []string{GGA(now, 48.7784, 9.18, 245.3, 1, 9), RMC(now, -33.5, -70.25)} {
		s, err := Parse(line)
		if err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if s.Type == "GGA" && (math.Abs(s.Lat-48.7784) > 1e-6 || math.Abs(s.Lon-9.18) > 1e-6 || s.Alt != 245.3) {
			t.Errorf("GGA round trip: %+v", s)
		}
		if s.Type == "RMC" && (math.Abs(s.Lat+33.5) > 1e-6 || math.Abs(s.Lon+70.25) > 1e-6) {
			t.Errorf("RMC round trip: %+v", s)
		}
	}
}
