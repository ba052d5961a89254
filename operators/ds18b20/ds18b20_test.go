package ds18b20

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestParseCaptures(t *testing.T) {
	tests := []struct {
		file    string
		want    float64
		wantErr error
	}{
		{"good-23125.w1_slave", 23.125, nil},
		{"good-26375.w1_slave", 26.375, nil},
		{"good-negative.w1_slave", -10.125, nil},
		{"power-on-85000.w1_slave", 0, ErrPowerOn},
		{"bad-crc-driver-no.w1_slave", 0, ErrCRC},
		{"bad-crc-driver-yes.w1_slave", 0, ErrCRC}, // a flipped bit the driver missed
		{"disconnected-zeros.w1_slave", 0, ErrNoDevice},
		{"disconnected-ones.w1_slave", 0, ErrNoDevice},
		{"truncated.w1_slave", 0, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(string(b))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Parse = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestParseMalformed(t *testing.T) {
	for _, text := range []string{
		"",
		"72 01 4b 46 7f ff 0e 10 57 crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125",
		"72 01 4b 46 7f ff 0e 10 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125",
		"72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57",
		"72 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=99999", // t= disagrees with the scratchpad
		"zz 01 4b 46 7f ff 0e 10 57 : crc=57 YES\n72 01 4b 46 7f ff 0e 10 57 t=23125",
	} {
		if _, err := Parse(text); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q) = %v, want ErrMalformed", text, err)
		}
	}
}

func TestCRC8KnownScratchpads(t *testing.T) {
	for _, tt := range []struct {
		pad  []byte
		want byte
	}{
		{[]byte{0x72, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10}, 0x57},
		{[]byte{0x50, 0x05, 0x4b, 0x46, 0x7f, 0xff, 0x0c, 0x10}, 0x1c},
		{[]byte{0xa6, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0a, 0x10}, 0xf6},
		{[]byte{0x28, 0x3c, 0x01, 0xd6, 0x07, 0x3f, 0x1a}, CRC8([]byte{0x28, 0x3c, 0x01, 0xd6, 0x07, 0x3f, 0x1a})},
	} {
		if got := CRC8(tt.pad); got != tt.want {
			t.Errorf("CRC8(% x) = %02x, want %02x", tt.pad, got, tt.want)
		}
	}
	// Appending the CRC makes the CRC of the whole zero (the 1-Wire check).
	pad := []byte{0x72, 0x01, 0x4b, 0x46, 0x7f, 0xff, 0x0e, 0x10, 0x57}
	if CRC8(pad) != 0 {
		t.Error("CRC over scratchpad and its CRC is not zero")
	}
}

func TestRenderRoundTrip(t *testing.T) {
	for _, c := range []float64{23.125, -10.125, 0, -0.5, 85.0625, -55, 125} {
		got, err := Parse(Render(c))
		if err != nil || got != c {
			t.Errorf("Parse(Render(%v)) = %v, %v", c, got, err)
		}
	}
}

func TestFind(t *testing.T) {
	base := filepath.Join("testdata", "devices")
	p, err := Find(base, "")
	if err != nil || p != filepath.Join(base, "28-3c01d6073f1a", "w1_slave") {
		t.Fatalf("Find = %q, %v", p, err)
	}
	if _, err := Find(base, "28-000000000000"); err == nil {
		t.Fatal("Find of a missing probe succeeded")
	}
	if _, err := Find(t.TempDir(), ""); err == nil {
		t.Fatal("Find without probes succeeded")
	}
	c, err := ReadRetry(context.Background(), Sysfs{Path: p}, 1, 0)
	if err != nil || c != 23.125 {
		t.Fatalf("ReadRetry = %v, %v", c, err)
	}
}

type seqProbe struct {
	texts []string
	n     int
}

func (s *seqProbe) ReadText() (string, error) {
	t := s.texts[min(s.n, len(s.texts)-1)]
	s.n++
	return t, nil
}

func TestReadRetrySkipsBadReads(t *testing.T) {
	read := func(f string) string {
		b, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	p := &seqProbe{texts: []string{read("bad-crc-driver-no.w1_slave"), read("power-on-85000.w1_slave"), read("good-26375.w1_slave")}}
	c, err := ReadRetry(context.Background(), p, 3, time.Millisecond)
	if err != nil || c != 26.375 || p.n != 3 {
		t.Fatalf("ReadRetry = %v, %v after %d reads; want 26.375 after 3", c, err, p.n)
	}
	p = &seqProbe{texts: []string{read("bad-crc-driver-yes.w1_slave")}}
	if _, err := ReadRetry(context.Background(), p, 3, time.Millisecond); !errors.Is(err, ErrCRC) || p.n != 3 {
		t.Fatalf("ReadRetry with only bad reads = %v after %d reads; want ErrCRC after 3", err, p.n)
	}
}

// timedProbe alternates a bad read and a good one, recording when each happened.
type timedProbe struct {
	mu    sync.Mutex
	reads []time.Time
}

func (p *timedProbe) ReadText() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.reads = append(p.reads, time.Now())
	if len(p.reads)%2 == 1 {
		return "", errors.New("no such device")
	}
	return Render(21.5), nil
}

type discard struct{}

func (discard) Data(string, any) {}
func (discard) State(any)        {}
func (discard) Thing() string    { return "probe-1" }

// After a read that needed the retry pause (longer than the interval here),
// the next read waits a whole interval instead of following at once.
func TestDeviceKeepsItsIntervalAfterARetry(t *testing.T) {
	const interval = 100 * time.Millisecond
	p := &timedProbe{}
	d := &Device{Probe: p, Interval: interval, Attempts: 2}
	ctx, cancel := context.WithTimeout(context.Background(), 1300*time.Millisecond)
	defer cancel()
	if err := d.Run(ctx, discard{}); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.reads) < 3 {
		t.Fatalf("only %d reads", len(p.reads))
	}
	for i := 1; i < len(p.reads); i++ {
		if gap := p.reads[i].Sub(p.reads[i-1]); gap < interval {
			t.Errorf("read %d came %v after the one before, want at least %v", i, gap, interval)
		}
	}
}
