package hooks

import (
	"sync"
	"sync/atomic"
	"unsafe"

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
	by map[string]map[uint16]queuedView
	n  atomic.Int64 // views kept: most deliveries look no further
}

// queuedView is the view of one in-flight message, and where its payload
// is: mochi's copies of an in-flight message share the payload, so a packet
// found under the id is told from another message that took the id since
// (its expiry freed it while the packet waited in the outbound queue).
type queuedView struct {
	view    *policies.View
	payload *byte
}

// keep remembers v for packet pid of client id, whose payload is payload;
// nil forgets it.
func (q *queuedViews) keep(id string, pid uint16, v *policies.View, payload []byte) {
	if v == nil && q.n.Load() == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.putLocked(id, pid, v, payload)
}

// putLocked is keep under q.mu.
func (q *queuedViews) putLocked(id string, pid uint16, v *policies.View, payload []byte) {
	ids := q.by[id]
	_, had := ids[pid]
	switch {
	case v != nil && !had:
		if ids == nil {
			if q.by == nil {
				q.by = map[string]map[uint16]queuedView{}
			}
			ids = map[uint16]queuedView{}
			q.by[id] = ids
		}
		q.n.Add(1)
	case v == nil && had:
		q.removeLocked(id, pid)
		return
	case v == nil:
		return
	}
	ids[pid] = queuedView{view: v, payload: unsafe.SliceData(payload)}
}

// keepInflight keeps v for packet pid of cl if pid holds the message whose
// payload is payload, and reports whether it did: looked at under the lock,
// like forget, so a view cannot outlive a message mochi frees meanwhile
// (mochi deletes the message before its hook forgets the view).
func (q *queuedViews) keepInflight(cl *mqtt.Client, pid uint16, payload []byte, v *policies.View) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if cur, ok := cl.State.Inflight.Get(pid); !ok || !sameBytes(cur.Payload, payload) {
		return false
	}
	q.putLocked(cl.ID, pid, v, payload)
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

// get returns the view kept for packet pid of client id, if it was kept for
// the message whose payload is payload, or nil.
func (q *queuedViews) get(id string, pid uint16, payload []byte) *policies.View {
	if q.n.Load() == 0 {
		return nil
	}
	q.mu.Lock()
	qv := q.by[id][pid]
	q.mu.Unlock()
	if qv.payload != unsafe.SliceData(payload) {
		return nil
	}
	return qv.view
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
