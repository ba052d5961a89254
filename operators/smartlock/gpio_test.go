package smartlock

import (
	"context"
	"sync"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
)

// fakePin is a GPIO line: periph's INVALID pin with a settable level.
type fakePin struct {
	gpio.PinIO
	sync.Mutex
	L gpio.Level
}

func newPin() *fakePin { return &fakePin{PinIO: gpio.INVALID} }

func (p *fakePin) Out(l gpio.Level) error        { p.Lock(); p.L = l; p.Unlock(); return nil }
func (p *fakePin) Read() gpio.Level              { p.Lock(); defer p.Unlock(); return p.L }
func (p *fakePin) In(gpio.Pull, gpio.Edge) error { return nil }

func TestGPIORelayLevels(t *testing.T) {
	tests := []struct {
		activeLow bool
		unlocked  bool
		want      gpio.Level
	}{
		{false, true, gpio.High},
		{false, false, gpio.Low},
		{true, true, gpio.Low}, // a relay board that switches on low
		{true, false, gpio.High},
	}
	for _, tt := range tests {
		pin := newPin()
		r := &GPIORelay{Pin: pin, ActiveLow: tt.activeLow}
		if err := r.Set(tt.unlocked); err != nil {
			t.Fatal(err)
		}
		if got := pin.Read(); got != tt.want {
			t.Errorf("activeLow=%v unlocked=%v: level %v, want %v", tt.activeLow, tt.unlocked, got, tt.want)
		}
	}
}

func setLevel(p *fakePin, l gpio.Level) {
	p.Lock()
	p.L = l
	p.Unlock()
}

func TestGPIODoorDebounces(t *testing.T) {
	pin := newPin()
	if err := pin.In(gpio.PullUp, gpio.NoEdge); err != nil {
		t.Fatal(err)
	}
	setLevel(pin, gpio.Low) // closed
	d := &GPIODoor{Pin: pin, OpenHigh: true}
	if open, _ := d.Open(); open {
		t.Fatal("a low level read as open")
	}
	var mu sync.Mutex
	var changes []bool
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Watch(ctx, func(open bool) { mu.Lock(); changes = append(changes, open); mu.Unlock() })
	time.Sleep(50 * time.Millisecond)
	// A 10 ms bounce is shorter than three samples: ignored.
	setLevel(pin, gpio.High)
	time.Sleep(10 * time.Millisecond)
	setLevel(pin, gpio.Low)
	time.Sleep(150 * time.Millisecond)
	// The door really opens, then closes.
	setLevel(pin, gpio.High)
	time.Sleep(200 * time.Millisecond)
	setLevel(pin, gpio.Low)
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != 2 || !changes[0] || changes[1] {
		t.Fatalf("changes %v, want [true false]", changes)
	}
}
