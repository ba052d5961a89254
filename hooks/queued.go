package hooks

import (
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/veil-iot/veil/policies"
)

// queuedViews remembers, by client id and packet id, the view a QoS 1 or 2
// delivery was decided under when that view may be looser by the time the
// packet is written (it ends at a time or depends on live data): mochi
// keeps the raw payload in flight, and writes it later to an offline
// session that comes back, or resends it. Keyed by client id, not session
// record, so the views follow a takeover and a session restored after a
// restart.
type queuedViews struct {
	mu sync.Mutex
	by map[string]map[uint16]*policies.View
	n  atomic.Int64 // views kept: most deliveries look no further
}

// keep remembers v for packet pid of client id; nil forgets it.
func (q *queuedViews) keep(id string, pid uint16, v *policies.View) {
	if v == nil && q.n.Load() == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.putLocked(id, pid, v)
}

// putLocked is keep under q.mu.
func (q *queuedViews) putLocked(id string, pid uint16, v *policies.View) {
	ids := q.by[id]
	_, had := ids[pid]
	switch {
	case v != nil && !had:
		if ids == nil {
			if q.by == nil {
				q.by = map[string]map[uint16]*policies.View{}
			}
			ids = map[uint16]*policies.View{}
			q.by[id] = ids
		}
		q.n.Add(1)
	case v == nil && had:
		q.removeLocked(id, pid)
		return
	case v == nil:
		return
	}
	ids[pid] = v
}

// keepInflight keeps v for packet pid of cl if pid is in flight, and
// reports whether it was: looked at under the lock, like forget, so a view
// cannot outlive a message mochi frees meanwhile (mochi deletes the
// message before its hook forgets the view).
func (q *queuedViews) keepInflight(cl *mqtt.Client, pid uint16, v *policies.View) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := cl.State.Inflight.Get(pid); !ok {
		return false
	}
	q.putLocked(cl.ID, pid, v)
	return true
}

// forget forgets the view kept for packet pid of cl, once mochi has freed
// the id: not if it is in flight again, a later packet's (looked at under
// the lock, and a packet is in flight before its view is kept).
func (q *queuedViews) forget(cl *mqtt.Client, pid uint16) {
	if q.n.Load() == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, again := cl.State.Inflight.Get(pid); again {
		return
	}
	if _, had := q.by[cl.ID][pid]; had {
		q.removeLocked(cl.ID, pid)
	}
}

// removeLocked forgets the view kept for packet pid of client id, which
// is there. Callers hold q.mu.
func (q *queuedViews) removeLocked(id string, pid uint16) {
	ids := q.by[id]
	delete(ids, pid)
	if len(ids) == 0 {
		delete(q.by, id)
	}
	q.n.Add(-1)
}

// get returns the view kept for packet pid of client id, or nil.
func (q *queuedViews) get(id string, pid uint16) *policies.View {
	if q.n.Load() == 0 {
		return nil
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.by[id][pid]
}

// forgetClient forgets every view kept for client id: its session ended.
func (q *queuedViews) forgetClient(id string) {
	if q.n.Load() == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.n.Add(-int64(len(q.by[id])))
	delete(q.by, id)
}
