package dht22

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseMilli(t *testing.T) {
	tests := []struct {
		in      string
		want    float64
		wantErr bool
	}{
		{"22300\n", 22.3, false},
		{"-4200\n", -4.2, false},
		{"41500", 41.5, false},
		{"0\n", 0, false},
		{"", 0, true},
		{"22.3\n", 0, true},
		{"abc\n", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseMilli(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseMilli(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestIIOCaptures(t *testing.T) {
	tests := []struct {
		dir     string
		want    Reading
		wantErr error
	}{
		{"iio/device1", Reading{Temperature: 22.3, Humidity: 41.5}, nil},
		{"frost", Reading{Temperature: -4.2, Humidity: 93.7}, nil},
		{"garbled", Reading{}, ErrImplausible},
		{"missing", Reading{}, fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			got, err := IIO{Dir: filepath.Join("testdata", tt.dir)}.Read()
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Read = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestFindIIO(t *testing.T) {
	got, err := FindIIO(filepath.Join("testdata", "iio"))
	if err != nil || got != filepath.Join("testdata", "iio", "device1") {
		t.Fatalf("FindIIO = %q, %v; want the dht11 device, not the ADC", got, err)
	}
	if _, err := FindIIO(t.TempDir()); err == nil || !strings.Contains(err.Error(), "dtoverlay=dht11") {
		t.Fatalf("FindIIO on an empty dir: %v", err)
	}
}

// flaky fails the first n reads of each file with errno, as the dht11
// driver does when it misses the sensor's response.
func flaky(n int, errno syscall.Errno) (func(string) ([]byte, error), *int) {
	calls := 0
	return func(p string) ([]byte, error) {
		calls++
		if calls <= n {
			return nil, &os.PathError{Op: "read", Path: p, Err: errno}
		}
		return os.ReadFile(p)
	}, &calls
}

func TestReadRetry(t *testing.T) {
	dir := filepath.Join("testdata", "iio", "device1")
	tests := []struct {
		name      string
		failures  int
		errno     syscall.Errno
		attempts  int
		wantErr   bool
		wantCalls int
	}{
		{"EIO twice then a value", 2, syscall.EIO, 5, false, 4},
		{"ETIMEDOUT once", 1, syscall.ETIMEDOUT, 5, false, 3},
		{"EAGAIN", 1, syscall.EAGAIN, 5, false, 3},
		{"always EIO gives up", 100, syscall.EIO, 3, true, 3},
		{"ENOENT is not transient", 1, syscall.ENOENT, 5, true, 1},
		{"EACCES is not transient", 1, syscall.EACCES, 5, true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rf, calls := flaky(tt.failures, tt.errno)
			r, err := ReadRetry(context.Background(), IIO{Dir: dir, ReadFile: rf}, tt.attempts, time.Millisecond)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("got %+v, want an error", r)
				}
			} else if err != nil || r != (Reading{Temperature: 22.3, Humidity: 41.5}) {
				t.Fatalf("ReadRetry = %+v, %v", r, err)
			}
			if *calls != tt.wantCalls {
				t.Errorf("%d file reads, want %d", *calls, tt.wantCalls)
			}
		})
	}
}

func TestReadRetryImplausibleIsRetried(t *testing.T) {
	s := &seq{rs: []Reading{{Temperature: 3276.7, Humidity: 41.5}, {Temperature: 22, Humidity: 140}, {Temperature: 21.9, Humidity: 40}}}
	r, err := ReadRetry(context.Background(), s, 5, time.Millisecond)
	if err != nil || r.Temperature != 21.9 || s.n != 3 {
		t.Fatalf("ReadRetry = %+v, %v after %d reads", r, err, s.n)
	}
}

type seq struct {
	rs []Reading
	n  int
}

func (s *seq) Read() (Reading, error) {
	r := s.rs[s.n]
	s.n++
	return r, r.Plausible()
}

func TestSimulatedIsPlausibleAndFailsSometimes(t *testing.T) {
	s := &Simulated{FailEvery: 4, Now: func() time.Time { return time.Date(2026, 11, 25, 15, 0, 0, 0, time.UTC) }}
	fails := 0
	for i := 0; i < 40; i++ {
		r, err := s.Read()
		if err != nil {
			if !Transient(err) {
				t.Fatalf("simulated failure %v is not transient", err)
			}
			fails++
			continue
		}
		if r.Plausible() != nil || r.Temperature < 18 || r.Temperature > 25 {
			t.Fatalf("implausible simulated reading %+v", r)
		}
	}
	if fails != 10 {
		t.Fatalf("%d failures in 40 reads, want 10", fails)
	}
}
