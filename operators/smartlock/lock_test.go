package smartlock

import (
	"errors"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// manualClock fires timers only when advanced.
type manualClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*manualTimer
}

type manualTimer struct {
	c       *manualClock
	at      time.Time
	f       func()
	stopped bool
}

func (t *manualTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &manualTimer{c: c, at: c.now.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

// Advance moves time forward, firing due timers in order.
func (c *manualClock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	for {
		sort.Slice(c.timers, func(i, j int) bool { return c.timers[i].at.Before(c.timers[j].at) })
		var due *manualTimer
		for i, t := range c.timers {
			if !t.stopped && !t.at.After(end) {
				due = t
				c.timers = append(c.timers[:i], c.timers[i+1:]...)
				break
			}
		}
		if due == nil {
			break
		}
		due.stopped = true
		c.now = due.at
		c.mu.Unlock()
		due.f()
		c.mu.Lock()
	}
	c.now = end
	c.mu.Unlock()
}

type rig struct {
	clock  *manualClock
	relay  *SimRelay
	door   *SimDoor
	lock   *Lock
	states []State
}

func newRig(t *testing.T, door string) *rig {
	t.Helper()
	r := &rig{clock: &manualClock{now: time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)}, relay: &SimRelay{}, door: &SimDoor{}}
	l, err := NewLock(r.relay, r.clock, 5*time.Second, door, func(s State) { r.states = append(r.states, s) })
	if err != nil {
		t.Fatal(err)
	}
	r.lock = l
	r.door.watcher = l.DoorChanged
	return r
}

// step is one event and what must hold afterwards.
type step struct {
	do        string // unlock:<by>, lock:<by>, wait:<duration>, door:open|closed
	locked    bool
	relayOpen bool
	door      string
	by        string
	newStates int // states reported by this step
}

func (r *rig) apply(t *testing.T, s step) {
	t.Helper()
	before := len(r.states)
	verb, arg, _ := strings.Cut(s.do, ":")
	switch verb {
	case "unlock":
		if err := r.lock.Unlock(arg); err != nil {
			t.Fatal(err)
		}
	case "lock":
		if err := r.lock.Lock(arg); err != nil {
			t.Fatal(err)
		}
	case "wait":
		d, err := time.ParseDuration(arg)
		if err != nil {
			t.Fatal(err)
		}
		r.clock.Advance(d)
	case "door":
		r.door.Set(arg == "open")
	default:
		t.Fatalf("bad step %q", s.do)
	}
	st := r.lock.State()
	if st.Locked != s.locked || r.relay.Unlocked() != s.relayOpen || st.Door != s.door || st.By != s.by {
		t.Fatalf("after %s: state %+v relay unlocked=%v; want locked=%v relay unlocked=%v door=%s by=%s",
			s.do, st, r.relay.Unlocked(), s.locked, s.relayOpen, s.door, s.by)
	}
	if got := len(r.states) - before; got != s.newStates {
		t.Fatalf("after %s: %d state reports, want %d (%+v)", s.do, got, s.newStates, r.states[before:])
	}
	if got := r.states[len(r.states)-1]; got != st {
		t.Fatalf("after %s: last report %+v differs from the state %+v", s.do, got, st)
	}
}

func TestLockStateMachine(t *testing.T) {
	tests := []struct {
		name  string
		door  string
		steps []step
	}{
		{"unlock then auto-relock after the delay, no contact", DoorUnknown, []step{
			{"unlock:ruth", false, true, DoorUnknown, "ruth", 1},
			{"wait:4s", false, true, DoorUnknown, "ruth", 0},
			{"wait:1s", true, false, DoorUnknown, ByAuto, 1},
			{"wait:1m", true, false, DoorUnknown, ByAuto, 0},
		}},
		{"explicit lock cancels the relock timer", DoorClosed, []step{
			{"unlock:an", false, true, DoorClosed, "an", 1},
			{"lock:an", true, false, DoorClosed, "an", 1},
			{"wait:10s", true, false, DoorClosed, "an", 0}, // no stray auto-relock report
		}},
		{"a second unlock restarts the delay", DoorClosed, []step{
			{"unlock:an", false, true, DoorClosed, "an", 1},
			{"wait:4s", false, true, DoorClosed, "an", 0},
			{"unlock:peter", false, true, DoorClosed, "peter", 1},
			{"wait:4s", false, true, DoorClosed, "peter", 0},
			{"wait:1s", true, false, DoorClosed, ByAuto, 1},
		}},
		{"door open at expiry defers the relock until it closes", DoorClosed, []step{
			{"unlock:ruth", false, true, DoorClosed, "ruth", 1},
			{"door:open", false, true, DoorOpen, "ruth", 1},
			{"wait:30s", false, true, DoorOpen, "ruth", 0},
			{"door:closed", true, false, DoorClosed, ByAuto, 1},
		}},
		{"the door closing after a walk-through relocks at once", DoorClosed, []step{
			{"unlock:ruth", false, true, DoorClosed, "ruth", 1},
			{"wait:1s", false, true, DoorClosed, "ruth", 0},
			{"door:open", false, true, DoorOpen, "ruth", 1},
			{"wait:1s", false, true, DoorOpen, "ruth", 0},
			{"door:closed", true, false, DoorClosed, ByAuto, 1},
			{"wait:10s", true, false, DoorClosed, ByAuto, 0},
		}},
		{"the door opening while locked is reported (forced?)", DoorClosed, []step{
			{"door:open", true, false, DoorOpen, ByBoot, 1},
			{"door:closed", true, false, DoorClosed, ByBoot, 1},
			{"door:closed", true, false, DoorClosed, ByBoot, 0}, // no change, no report
		}},
		{"locking with the door open", DoorOpen, []step{
			{"unlock:an", false, true, DoorOpen, "an", 1},
			{"lock:an", true, false, DoorOpen, "an", 1},
			{"door:closed", true, false, DoorClosed, "an", 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, tt.door)
			if st := r.lock.State(); !st.Locked || r.relay.Unlocked() || st.By != ByBoot || len(r.states) != 1 {
				t.Fatalf("start: %+v, relay unlocked=%v, %d reports; want locked by boot, 1 report", st, r.relay.Unlocked(), len(r.states))
			}
			r.door.open = tt.door == DoorOpen
			for _, s := range tt.steps {
				r.apply(t, s)
			}
		})
	}
}

func TestStateTimes(t *testing.T) {
	r := newRig(t, DoorClosed)
	r.clock.Advance(time.Minute)
	if err := r.lock.Unlock("ruth"); err != nil {
		t.Fatal(err)
	}
	if at := r.lock.State().At; !at.Equal(time.Date(2026, 11, 25, 20, 1, 0, 0, time.UTC)) {
		t.Fatalf("at = %v", at)
	}
	r.clock.Advance(10 * time.Second)
	if at := r.lock.State().At; !at.Equal(time.Date(2026, 11, 25, 20, 1, 5, 0, time.UTC)) {
		t.Fatalf("auto-relock at = %v, want the moment the delay expired", at)
	}
}

func TestRelayFailureChangesNothing(t *testing.T) {
	r := newRig(t, DoorClosed)
	r.relay.Fail = errors.New("gpio: write /dev/gpiochip0: input/output error")
	if err := r.lock.Unlock("ruth"); err == nil || !strings.Contains(err.Error(), "relay") {
		t.Fatalf("Unlock with a failing relay: %v", err)
	}
	if st := r.lock.State(); !st.Locked || len(r.states) != 1 {
		t.Fatalf("state claims a move the relay did not make: %+v (%d reports)", st, len(r.states))
	}
}

func TestNewLockRejectsZeroDelay(t *testing.T) {
	if _, err := NewLock(&SimRelay{}, &manualClock{}, 0, DoorUnknown, nil); err == nil {
		t.Fatal("zero relock delay accepted")
	}
}

func TestNewLockFailSecure(t *testing.T) {
	relay := &SimRelay{}
	_ = relay.Set(true)
	if _, err := NewLock(relay, &manualClock{}, time.Second, DoorUnknown, nil); err != nil || relay.Unlocked() {
		t.Fatalf("start did not lock the relay: %v, unlocked=%v", err, relay.Unlocked())
	}
}

func TestAutoRelockRetriesAFailingRelay(t *testing.T) {
	r := newRig(t, DoorClosed)
	if err := r.lock.Unlock("ruth"); err != nil {
		t.Fatal(err)
	}
	r.relay.mu.Lock()
	r.relay.Fail = errors.New("gpio: transient")
	r.relay.mu.Unlock()
	r.clock.Advance(5 * time.Second) // the relock fails
	if st := r.lock.State(); st.Locked {
		t.Fatalf("state claims locked while the relay failed: %+v", st)
	}
	r.clock.Advance(RelockRetry) // fails again
	r.relay.mu.Lock()
	r.relay.Fail = nil
	r.relay.mu.Unlock()
	r.clock.Advance(RelockRetry) // and succeeds
	if st := r.lock.State(); !st.Locked || st.By != ByAuto || r.relay.Unlocked() {
		t.Fatalf("after the relay recovered: %+v, relay unlocked=%v", st, r.relay.Unlocked())
	}
}

// TestDoorCloseRelockFailureIsRetried: a relock that fails when the door
// closes (a transient relay error) is retried like a failed timer relock,
// instead of leaving the lock open until the next command.
func TestDoorCloseRelockFailureIsRetried(t *testing.T) {
	tests := []struct {
		name string
		wait time.Duration // between the unlock and the door opening
		open time.Duration // the door stays open this long
	}{
		{"delay expired with the door open", 0, 30 * time.Second},
		{"walk-through before the delay expired", time.Second, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, DoorClosed)
			if err := r.lock.Unlock("ruth"); err != nil {
				t.Fatal(err)
			}
			r.clock.Advance(tt.wait)
			r.door.Set(true)
			r.clock.Advance(tt.open)
			r.relay.mu.Lock()
			r.relay.Fail = errors.New("gpio: transient")
			r.relay.mu.Unlock()
			r.door.Set(false) // the relock is attempted and fails once
			if st := r.lock.State(); st.Locked || st.Door != DoorClosed {
				t.Fatalf("after the failed relock: %+v, want unlocked (the relay did not switch), door closed", st)
			}
			r.relay.mu.Lock()
			r.relay.Fail = nil
			r.relay.mu.Unlock()
			r.clock.Advance(RelockRetry)
			if st := r.lock.State(); !st.Locked || st.By != ByAuto || r.relay.Unlocked() {
				t.Fatalf("one retry interval later: %+v, relay unlocked=%v; want locked by auto", st, r.relay.Unlocked())
			}
			n := len(r.states)
			r.clock.Advance(time.Hour) // no stray timer moves or reports anything
			if len(r.states) != n || !r.lock.State().Locked {
				t.Fatalf("reports after the relock: %+v", r.states[n:])
			}
		})
	}
}

// TestStopIsFinal: after Stop the lock is locked by "stop" and never
// unlocks again, even when the stop's own relay switch failed.
func TestStopIsFinal(t *testing.T) {
	tests := []struct {
		name      string
		unlocked  bool  // unlocked before the stop
		stopFail  error // the relay fails during the stop
		wantStopE bool
	}{
		{"locked", false, nil, false},
		{"unlocked", true, nil, false},
		{"the relay fails at the stop", true, errors.New("gpio: transient"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, DoorClosed)
			if tt.unlocked {
				if err := r.lock.Unlock("ruth"); err != nil {
					t.Fatal(err)
				}
			}
			r.relay.mu.Lock()
			r.relay.Fail = tt.stopFail
			r.relay.mu.Unlock()
			if err := r.lock.Stop(); (err != nil) != tt.wantStopE {
				t.Fatalf("Stop: %v", err)
			}
			r.relay.mu.Lock()
			r.relay.Fail = nil
			r.relay.mu.Unlock()
			if err := r.lock.Unlock("ruth"); !errors.Is(err, ErrStopped) || r.relay.Unlocked() != (tt.stopFail != nil) {
				t.Fatalf("Unlock after Stop: %v, relay unlocked=%v; want ErrStopped, the relay untouched", err, r.relay.Unlocked())
			}
			wantBy := ByStop
			if tt.stopFail != nil {
				// The failed stop's lock is retried as an auto-relock.
				r.clock.Advance(RelockRetry)
				wantBy = ByAuto
			}
			if st := r.lock.State(); !st.Locked || r.relay.Unlocked() || st.By != wantBy {
				t.Fatalf("after Stop: %+v, relay unlocked=%v; want locked by %s", st, r.relay.Unlocked(), wantBy)
			}
			r.clock.Advance(time.Hour)
			if err := r.lock.Unlock("ruth"); !errors.Is(err, ErrStopped) || r.relay.Unlocked() {
				t.Fatalf("Unlock an hour after Stop: %v, relay unlocked=%v", err, r.relay.Unlocked())
			}
		})
	}
}
