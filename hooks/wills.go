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
	// holder is, by client id, the connection that established its
	// session last and has not ended; takenBy is, for a connection whose
	// session a new one took over before its will came, whether the first
	// one to take it started clean: decided at the takeover, since later
	// connections (or their end) say nothing of it. A connection leaves
	// both as it ends (ended), after its will.
	holder  map[string]*mqtt.Client
	takenBy map[*mqtt.Client]bool
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
// is replaced) — unless a new connection took cl's session over already
// (establish): one that resumed it cancelled the will, one that started
// clean ended the session and made it due now. Whichever of the two comes
// first, the takeover decides: mochi may stop the old connection, whose
// will comes as it ends, before the new one's session is established.
func (w *delayedWills) holdUnlessTaken(cl *mqtt.Client, who policies.Principal, will mqtt.Will, delay time.Duration,
	send func(*delayedWill)) willFate {
	id := cl.ID
	w.mu.Lock()
	defer w.mu.Unlock()
	if clean, taken := w.takenBy[cl]; taken {
		delete(w.takenBy, cl)
		if clean {
			return willDueNow
		}
		return willDropped
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

// establish makes cl, whose session was just established (clean: by a
// clean start), the connection holding its client id, and takes the will
// held for the id: the will of the connection it took over, held already,
// is decided now; one still to come is decided by this takeover
// (holdUnlessTaken).
func (w *delayedWills) establish(cl *mqtt.Client, clean bool) *delayedWill {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.holder == nil {
		w.holder, w.takenBy = map[string]*mqtt.Client{}, map[*mqtt.Client]bool{}
	}
	if prev := w.holder[cl.ID]; prev != nil && prev != cl {
		w.takenBy[prev] = clean
	}
	w.holder[cl.ID] = cl
	return w.takeLocked(cl.ID)
}

// ended forgets cl, whose connection ended (OnDisconnect, after its will).
func (w *delayedWills) ended(cl *mqtt.Client) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.takenBy, cl)
	if w.holder[cl.ID] == cl {
		delete(w.holder, cl.ID)
	}
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
