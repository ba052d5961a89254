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

// hold keeps the will of cl for delay, then hands it to send unless it was
// taken meanwhile. A will held before for the same client id is replaced.
func (w *delayedWills) hold(cl *mqtt.Client, who policies.Principal, will mqtt.Will, delay time.Duration, send func(*delayedWill)) {
	id := cl.ID
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
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
