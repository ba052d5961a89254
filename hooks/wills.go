package hooks

import (
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/veil-iot/veil/policies"
)

// delayedWills holds the wills whose clients asked for a delay (MQTT 5
// Will Delay Interval). mochi sends a delayed will without calling any
// hook, so it would go out on rights decided when its client dropped,
// however long before (a visitor's unlock after the window closed). Veil
// keeps them itself instead, and decides each when it is due.
type delayedWills struct {
	mu      sync.Mutex
	pending map[string]*delayedWill // by client id
	stopped bool
}

type delayedWill struct {
	who   policies.Principal
	will  mqtt.Will
	timer *time.Timer
}

// willFate is what becomes of a will with a delay as its connection ends.
type willFate int

const (
	willHeld    willFate = iota // kept for its delay (or dropped: the broker is closing)
	willDropped                 // a new connection resumed the session: no will
	willDueNow                  // a new connection started clean: the session ended
)

// holdUnlessTaken keeps the will of cl for delay, then hands it to send
// unless it was taken meanwhile (a will held before for the same client id
// is replaced) — unless newer, called under the lock establish takes too,
// names a connection that took the session of cl's id since. Whichever of a
// new connection's establish and the old connection's will comes first,
// the new connection cancels the will, or makes it due now: mochi may end
// the old connection before the new one's session is established.
func (w *delayedWills) holdUnlessTaken(cl *mqtt.Client, who policies.Principal, will mqtt.Will, delay time.Duration,
	send func(*delayedWill), newer func() *mqtt.Client) willFate {
	id := cl.ID
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := newer(); n != nil {
		if !n.Properties.Clean {
			return willDropped
		}
		return willDueNow
	}
	if w.stopped {
		return willHeld
	}
	if w.pending == nil {
		w.pending = map[string]*delayedWill{}
	}
	if old := w.pending[id]; old != nil {
		old.timer.Stop()
	}
	d := &delayedWill{who: who, will: will}
	d.timer = time.AfterFunc(delay, func() {
		if w.take(id, d) {
			send(d)
		}
	})
	w.pending[id] = d
	return willHeld
}

// establish runs record, which makes a new connection the one holding
// client id (what holdUnlessTaken's newer reads), and takes the will held
// for id, under one lock: see holdUnlessTaken.
func (w *delayedWills) establish(id string, record func()) *delayedWill {
	w.mu.Lock()
	defer w.mu.Unlock()
	record()
	return w.takeLocked(id)
}

// take removes the will held for id if it is still d, and reports
// whether it did.
func (w *delayedWills) take(id string, d *delayedWill) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	cur := w.pending[id]
	if cur == nil || cur != d || w.stopped {
		return false
	}
	cur.timer.Stop()
	delete(w.pending, id)
	return true
}

// takeNow removes the will held for id and returns it, or nil.
func (w *delayedWills) takeNow(id string) *delayedWill {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.takeLocked(id)
}

func (w *delayedWills) takeLocked(id string) *delayedWill {
	d := w.pending[id]
	if d == nil || w.stopped {
		return nil
	}
	d.timer.Stop()
	delete(w.pending, id)
	return d
}

// stop drops every held will: the broker is closing.
func (w *delayedWills) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	for id, d := range w.pending {
		d.timer.Stop()
		delete(w.pending, id)
	}
}
