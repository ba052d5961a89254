package cpu

import (
	"path/filepath"
	"testing"
)

func TestParseThermal(t *testing.T) {
	tests := []struct {
		in      string
		want    float64
		wantErr bool
	}{
		{"48312\n", 48.312, false},
		{"61835\n", 61.835, false},
		{"-1000\n", -1, false},
		{"200000\n", 0, true}, // implausible
		{"\n", 0, true},
		{"48.3\n", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseThermal(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseThermal(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestParseLoadavg(t *testing.T) {
	tests := []struct {
		in          string
		l1, l5, l15 float64
		wantErr     bool
	}{
		{"0.52 0.58 0.59 1/372 12345\n", 0.52, 0.58, 0.59, false},
		{"3.10 1.25 0.40 5/401 2210\n", 3.10, 1.25, 0.40, false},
		{"0.52 0.58\n", 0, 0, 0, true},
		{"x 0.58 0.59 1/372 12345\n", 0, 0, 0, true},
		{"-1 0.58 0.59 1/372 12345\n", 0, 0, 0, true},
	}
	for _, tt := range tests {
		l1, l5, l15, err := ParseLoadavg(tt.in)
		if (err != nil) != tt.wantErr || l1 != tt.l1 || l5 != tt.l5 || l15 != tt.l15 {
			t.Errorf("ParseLoadavg(%q) = %v %v %v, %v", tt.in, l1, l5, l15, err)
		}
	}
}

func TestSystemCaptures(t *testing.T) {
	s := System{Thermal: filepath.Join("testdata", "thermal_zone0_temp"), Loadavg: filepath.Join("testdata", "loadavg")}
	r, err := s.Sample()
	if err != nil {
		t.Fatal(err)
	}
	if want := (Reading{Temperature: 48.312, Load1: 0.52, Load5: 0.58, Load15: 0.59}); r != want {
		t.Fatalf("Sample = %+v, want %+v", r, want)
	}
	if _, err := (System{Thermal: "testdata/none", Loadavg: s.Loadavg}).Sample(); err == nil {
		t.Fatal("missing thermal file accepted")
	}
}

func TestSimulatedPlausible(t *testing.T) {
	s := &Simulated{}
	for i := 0; i < 100; i++ {
		r, err := s.Sample()
		if err != nil || r.Temperature < 35 || r.Temperature > 85 || r.Load1 < 0 || r.Load5 < 0 || r.Load15 < 0 {
			t.Fatalf("implausible simulated sample %+v, %v", r, err)
		}
	}
}
