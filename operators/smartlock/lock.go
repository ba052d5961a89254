// Package smartlock is the actuator operator: a relay (or a MOSFET driving
// a solenoid strike) on a GPIO line, an optional door/reed contact, and a
// state machine that unlocks on command, relocks automatically and reports
// every change as the retained things/{id}/state.
package smartlock

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Relay drives the lock: unlocked=true energises the strike.
type Relay interface {
	Set(unlocked bool) error
}

// Clock is the lock's time source; tests inject a manual one.
type Clock interface {
	Now() time.Time
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc.
type Timer interface{ Stop() bool }

// RealClock is the wall clock.
type RealClock struct{}

// Now implements Clock.
func (RealClock) Now() time.Time { return time.Now() }

// AfterFunc implements Clock.
func (RealClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// Door contact values in the state.
const (
	DoorOpen    = "open"
	DoorClosed  = "closed"
	DoorUnknown = "unknown" // no contact wired
)

// Who moved the lock, besides a commanding user.
const (
	ByBoot = "boot" // locked at start (fail-secure)
	ByAuto = "auto" // auto-relock (delay expired, or the door closed again)
	ByStop = "stop" // locked because the operator stopped
)

// State is the retained things/{id}/state.
type State struct {
	Online bool      `json:"online"`
	Locked bool      `json:"locked"`
	Door   string    `json:"door"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}

// Lock is the state machine. Rules:
//   - unlock: energise the relay, start the relock timer (restart it if
//     already unlocked);
//   - lock: de-energise at once, cancel the timer;
//   - the timer expires: relock — unless the door is open, then relock as
//     soon as it closes;
//   - the door closes after having been opened while unlocked: relock at
//     once (someone went through);
//   - every change (lock, door) is reported through OnChange;
//   - a failed auto-relock (timer or door) is tried again every
//     RelockRetry until it succeeds;
//   - after Stop it locks, and never unlocks again.
//
// A relay that fails to switch leaves the state as it was and returns the
// error: the state never claims what the hardware did not do.
type Lock struct {
	relay       Relay
	clock       Clock
	relockAfter time.Duration
	onChange    func(State)

	mu            sync.Mutex
	st            State
	timer         Timer
	gen           uint64 // invalidates a timer that fired after being replaced
	relockPending bool   // the timer expired while the door was open
	openedSince   bool   // the door opened since the last unlock
	stopped       bool   // Stop was called: the lock never unlocks again
}

// ErrStopped is an unlock refused because the operator is stopping.
var ErrStopped = errors.New("smartlock: stopped: the lock stays locked")

// NewLock locks the relay (fail-secure start) and returns the machine.
// door is DoorUnknown without a contact, else its current position.
func NewLock(relay Relay, clock Clock, relockAfter time.Duration, door string, onChange func(State)) (*Lock, error) {
	if relockAfter <= 0 {
		return nil, fmt.Errorf("smartlock: relock delay %s must be positive", relockAfter)
	}
	if err := relay.Set(false); err != nil {
		return nil, fmt.Errorf("smartlock: locking at start: %w", err)
	}
	if onChange == nil {
		onChange = func(State) {}
	}
	l := &Lock{relay: relay, clock: clock, relockAfter: relockAfter, onChange: onChange,
		st: State{Online: true, Locked: true, Door: door, By: ByBoot, At: clock.Now().UTC()}}
	onChange(l.st)
	return l, nil
}

// State returns the current state.
func (l *Lock) State() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.st
}

// Unlock opens the lock for relockAfter; after Stop it is refused.
func (l *Lock) Unlock(by string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return ErrStopped
	}
	if err := l.relay.Set(true); err != nil {
		return fmt.Errorf("smartlock: unlock: relay: %w", err)
	}
	l.stopTimer()
	l.gen++
	gen := l.gen
	l.timer = l.clock.AfterFunc(l.relockAfter, func() { l.expired(gen) })
	l.relockPending, l.openedSince = false, false
	l.st.Locked, l.st.By, l.st.At = false, by, l.clock.Now().UTC()
	l.onChange(l.st)
	return nil
}

// Lock locks at once.
func (l *Lock) Lock(by string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lockLocked(by)
}

// Stop locks (by ByStop) for good: from now on Unlock is refused. A command
// that was being handled when the operator began to stop (parsed, not yet
// applied) would otherwise unlock after the stop's lock and leave the door
// unlocked with nobody left to relock it. Locking stays possible. The
// machine is stopped even if the relay fails to switch: the error is
// returned and the relock retried as a failed auto-relock is (for as long
// as the process lives).
func (l *Lock) Stop() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	if err := l.lockLocked(ByStop); err != nil {
		if !l.st.Locked {
			l.retryRelock()
		}
		return err
	}
	return nil
}

func (l *Lock) lockLocked(by string) error {
	if err := l.relay.Set(false); err != nil {
		return fmt.Errorf("smartlock: lock: relay: %w", err)
	}
	l.stopTimer()
	l.gen++
	l.relockPending, l.openedSince = false, false
	l.st.Locked, l.st.By, l.st.At = true, by, l.clock.Now().UTC()
	l.onChange(l.st)
	return nil
}

func (l *Lock) stopTimer() {
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
	}
}

// expired is the relock timer.
func (l *Lock) expired(gen uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if gen != l.gen || l.st.Locked {
		return
	}
	l.timer = nil
	if l.st.Door == DoorOpen {
		l.relockPending = true
		return
	}
	if err := l.lockLocked(ByAuto); err != nil {
		// The relay did not switch: try again shortly, never give up.
		l.retryRelock()
	}
}

// retryRelock schedules another auto-relock attempt after a failed one.
// It replaces any pending timer under a new generation, so exactly one
// attempt is pending; expired makes it, or defers it again while the door
// is open.
func (l *Lock) retryRelock() {
	l.stopTimer()
	l.gen++
	gen := l.gen
	l.timer = l.clock.AfterFunc(RelockRetry, func() { l.expired(gen) })
}

// RelockRetry is how soon a failed auto-relock is tried again.
const RelockRetry = time.Second

// DoorChanged reports the contact's new position.
func (l *Lock) DoorChanged(open bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	pos := DoorClosed
	if open {
		pos = DoorOpen
	}
	if l.st.Door == pos {
		return
	}
	l.st.Door = pos
	if !l.st.Locked {
		if open {
			l.openedSince = true
		} else if l.relockPending || l.openedSince {
			if err := l.lockLocked(ByAuto); err == nil {
				return // lockLocked reported the door too
			}
			// The relay did not switch: retry as a failed timer relock
			// does. Without this a transient relay error left the lock
			// open with no timer pending (the delay had expired) until
			// the next command.
			l.retryRelock()
		}
	}
	l.st.At = l.clock.Now().UTC()
	l.onChange(l.st)
}
