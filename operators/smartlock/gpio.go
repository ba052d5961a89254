package smartlock

import (
	"context"
	"fmt"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/host/v3"
)

// DoorContact is a door/reed switch.
type DoorContact interface {
	// Open reads the contact now.
	Open() (bool, error)
	// Watch calls changed with every debounced change until ctx ends.
	Watch(ctx context.Context, changed func(open bool))
}

// OpenPins initialises periph.io's host drivers (the GPIO character device,
// or sysfs on old kernels) and returns the relay and, if doorPin is set,
// the door contact. Pin names are periph's, e.g. "GPIO17".
func OpenPins(relayPin string, activeLow bool, doorPin string, doorOpenHigh bool) (Relay, DoorContact, error) {
	if _, err := host.Init(); err != nil {
		return nil, nil, fmt.Errorf("smartlock: periph host init: %w", err)
	}
	rp := gpioreg.ByName(relayPin)
	if rp == nil {
		return nil, nil, fmt.Errorf("smartlock: relay pin %q not found (want a name such as GPIO17)", relayPin)
	}
	relay := &GPIORelay{Pin: rp, ActiveLow: activeLow}
	if doorPin == "" {
		return relay, nil, nil
	}
	dp := gpioreg.ByName(doorPin)
	if dp == nil {
		return nil, nil, fmt.Errorf("smartlock: door pin %q not found (want a name such as GPIO27)", doorPin)
	}
	// A reed switch to ground with the internal pull-up: closed door
	// (magnet at the switch) reads low, open door high.
	if err := dp.In(gpio.PullUp, gpio.NoEdge); err != nil {
		return nil, nil, fmt.Errorf("smartlock: door pin %s as input: %w", doorPin, err)
	}
	return relay, &GPIODoor{Pin: dp, OpenHigh: doorOpenHigh}, nil
}

// GPIORelay drives a relay board or MOSFET on a GPIO line. Many relay
// boards switch on a low input: set ActiveLow for those.
type GPIORelay struct {
	Pin       gpio.PinOut
	ActiveLow bool
}

// Set implements Relay.
func (r *GPIORelay) Set(unlocked bool) error {
	level := gpio.Level(unlocked)
	if r.ActiveLow {
		level = !level
	}
	return r.Pin.Out(level)
}

// GPIODoor polls a contact on a GPIO input and debounces it (three equal
// samples 20 ms apart).
type GPIODoor struct {
	Pin      gpio.PinIn
	OpenHigh bool // true: a high level means open (reed to ground with pull-up)
}

// Open implements DoorContact.
func (d *GPIODoor) Open() (bool, error) { return d.Pin.Read() == gpio.Level(d.OpenHigh), nil }

// Watch implements DoorContact.
func (d *GPIODoor) Watch(ctx context.Context, changed func(open bool)) {
	last, _ := d.Open()
	same, cand := 0, last
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		v, _ := d.Open()
		if v != cand {
			cand, same = v, 0
		}
		same++
		if same >= 3 && cand != last {
			last = cand
			changed(last)
		}
	}
}

// SimRelay records what the relay was told; it can be made to fail.
type SimRelay struct {
	mu       sync.Mutex
	unlocked bool
	Fail     error
	OnSet    func(unlocked bool) // optional observer (the simulated door)
	switches int
}

// Set implements Relay.
func (r *SimRelay) Set(unlocked bool) error {
	r.mu.Lock()
	if r.Fail != nil {
		err := r.Fail
		r.mu.Unlock()
		return err
	}
	r.unlocked = unlocked
	r.switches++
	obs := r.OnSet
	r.mu.Unlock()
	if obs != nil {
		obs(unlocked)
	}
	return nil
}

// Unlocked reports the relay's level.
func (r *SimRelay) Unlocked() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unlocked
}

// SimDoor is a simulated contact, moved by Set (tests) or by a simulated
// person walking through after each unlock (--simulate).
type SimDoor struct {
	mu      sync.Mutex
	open    bool
	watcher func(bool)
}

// Open implements DoorContact.
func (d *SimDoor) Open() (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.open, nil
}

// Watch implements DoorContact.
func (d *SimDoor) Watch(ctx context.Context, changed func(open bool)) {
	d.mu.Lock()
	d.watcher = changed
	d.mu.Unlock()
	<-ctx.Done()
	d.mu.Lock()
	d.watcher = nil
	d.mu.Unlock()
}

// Set moves the door.
func (d *SimDoor) Set(open bool) {
	d.mu.Lock()
	changed := d.open != open
	d.open = open
	w := d.watcher
	d.mu.Unlock()
	if changed && w != nil {
		w(open)
	}
}

// SimulatePerson makes the door open a moment after each unlock and close
// again a few seconds later, as if someone walked through.
func SimulatePerson(relay *SimRelay, door *SimDoor, openAfter, closeAfter time.Duration) {
	relay.OnSet = func(unlocked bool) {
		if !unlocked {
			return
		}
		go func() {
			time.Sleep(openAfter)
			if !relay.Unlocked() {
				return
			}
			door.Set(true)
			time.Sleep(closeAfter)
			door.Set(false)
		}()
	}
}
