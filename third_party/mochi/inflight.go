// SPDX-License-Identifier: MIT
// SPDX-FileCopyrightText: 2023 mochi-mqtt, mochi-co
// SPDX-FileContributor: mochi-co

package mqtt

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Inflight is a map of InflightMessage keyed on packet id.
//
// The client's own QoS 1 and 2 flows (the PUBACK, PUBREC or PUBCOMP the
// server answers a client's PUBLISH or PUBREL with) are kept apart, in a map
// of their own: a client picks its packet ids independently of the server's,
// and a client's PUBLISH may carry the id of a delivery in flight to it
// (MQTT 5 §2.2.1). Set files a packet by its type; Get and Delete are the
// server's deliveries, GetReceived and DeleteReceived the client's flows.
//
// It also keeps the client's send quota (MQTT 5 §4.9): a QoS 1 or 2 delivery
// takes a unit of it when it is sent, and gives it back when its flow ends
// (PUBACK, PUBCOMP, a PUBREC with an error code) or it is deleted for any
// other reason. A delivery that finds no unit free, or others waiting, waits
// in the map, in a queue, until a unit is given back; it is then queued for
// writing on the client's outbound queue behind what was queued before it.
// The quota decisions are taken under the map's lock, so that concurrent
// publishers and acknowledgements can neither overrun the quota nor leave
// a delivery waiting while a unit is free.
type Inflight struct {
	sync.RWMutex
	internal            map[uint16]*packets.Packet // the server's deliveries, each from inflightPackets, never handed out
	received            map[uint16]packets.Packet  // the acks of the client's own QoS flows, by the client's packet ids
	receiveQuota        int32                      // remaining inbound qos quota for flow control
	sendQuota           int32                      // remaining outbound qos quota for flow control (written under the lock)
	maximumReceiveQuota int32                      // maximum allowed receive quota
	maximumSendQuota    int32                      // maximum allowed send quota; 0: no send quota (the client set no Receive Maximum)
	order               map[uint16]uint64          // when each packet was stored, to order packets of the same second
	seq                 uint64                     // the last order given
	held                map[uint16]struct{}        // outbound packets (a PUBLISH, then its PUBREL) holding a unit of send quota
	pending             []uint16                   // outbound PUBLISH packets waiting for send quota, in delivery order
	announcing          map[uint16]uint64          // waiting packets not to release before their OnQosPublish returns (value: their order)
	resending           bool                       // the session's in-flight messages are being resent: new deliveries wait
	client              *Client                    // the client whose outbound queue released packets join; nil: none
	movedTo             *Client                    // the client that took the session over: deliveries go to it (moveTo)
}

// NewInflights returns a new instance of an Inflight packets map.
func NewInflights() *Inflight {
	return &Inflight{
		internal:   map[uint16]*packets.Packet{},
		received:   map[uint16]packets.Packet{},
		order:      map[uint16]uint64{},
		held:       map[uint16]struct{}{},
		announcing: map[uint16]uint64{},
	}
}

// init makes the maps of an Inflight not made by NewInflights. The caller
// holds the lock.
func (i *Inflight) init() {
	if i.internal == nil {
		i.internal = map[uint16]*packets.Packet{}
	}
	if i.received == nil {
		i.received = map[uint16]packets.Packet{}
	}
	if i.order == nil {
		i.order = map[uint16]uint64{}
	}
	if i.held == nil {
		i.held = map[uint16]struct{}{}
	}
	if i.announcing == nil {
		i.announcing = map[uint16]uint64{}
	}
}

// store adds or updates m, keeping the order of an update. The caller
// holds the lock.
func (i *Inflight) store(m packets.Packet) bool {
	i.init()
	if p, ok := i.internal[m.PacketID]; ok {
		*p = m
		return false
	}
	i.internal[m.PacketID] = newInflightPacket(m)
	i.seq++
	i.order[m.PacketID] = i.seq
	return true
}

// inflightPackets holds the packets the deliveries in flight are kept in:
// a map of Packets (800 bytes, kept outside the map's slots) allocated one
// per delivery. A packet never leaves its map, whose readers get copies,
// so a deleted one goes back to the pool (dropInflight).
var inflightPackets = sync.Pool{New: func() any { return new(packets.Packet) }}

func newInflightPacket(m packets.Packet) *packets.Packet {
	p := inflightPackets.Get().(*packets.Packet)
	*p = m
	return p
}

// dropInflight deletes delivery id from the map and returns its packet to
// the pool, emptied so that it keeps no payload alive. The caller holds the
// lock.
func (i *Inflight) dropInflight(id uint16) {
	p, ok := i.internal[id]
	if !ok {
		return
	}
	delete(i.internal, id)
	*p = packets.Packet{}
	inflightPackets.Put(p)
}

// Set adds or updates an inflight packet by packet id. An update keeps the
// send quota the packet id holds or waits for (a PUBREL replacing its
// PUBLISH holds the PUBLISH's unit until the PUBCOMP). An ack of the
// client's own flow (PUBACK, PUBREC, PUBCOMP) goes with the client's flows.
func (i *Inflight) Set(m packets.Packet) bool {
	i.Lock()
	defer i.Unlock()
	if isReceived(m) {
		i.init()
		_, ok := i.received[m.PacketID]
		i.received[m.PacketID] = m
		return !ok
	}
	return i.store(m)
}

// isReceived reports whether m belongs to a QoS flow the client started: the
// server sends PUBACK, PUBREC and PUBCOMP only in answer to the client's
// PUBLISH and PUBREL.
func isReceived(m packets.Packet) bool {
	switch m.FixedHeader.Type {
	case packets.Puback, packets.Pubrec, packets.Pubcomp:
		return true
	}
	return false
}

// admit adds m, a QoS 1 or 2 PUBLISH to the client, and decides under the
// lock whether it is sent now: it takes a unit of send quota if one is free
// and no delivery is waiting (or the client set no Receive Maximum);
// otherwise it waits in order, and pending is true: the caller must not
// queue it, the quota's return will. added is false if the packet id was in
// use (the packet replaced it, with its state).
func (i *Inflight) admit(m packets.Packet) (added, pending bool) {
	added, pending, _, _ = i.enqueue(m, true)
	return added, pending
}

// enqueue is admit; if announced is false, m, if it waits, is not released
// (nor those behind it) until announced(m.PacketID, token) is called: the
// caller calls OnQosPublish for it first, as for a delivery it writes itself,
// which the quota's return (another goroutine) could otherwise overtake.
// If another client has taken the session over since its in-flight messages
// were moved to it (moveTo), m is not added, and moved is that client: the
// caller delivers m to it instead.
// A message the caller is to queue now comes with token too, for
// queueSent.
func (i *Inflight) enqueue(m packets.Packet, announced bool) (added, pending bool, token uint64, moved *Client) {
	i.Lock()
	defer i.Unlock()
	if i.movedTo != nil {
		return false, false, 0, i.movedTo
	}
	added = i.store(m)
	if !added {
		_, held := i.held[m.PacketID]
		return false, !held && i.waiting(m.PacketID), i.order[m.PacketID], nil
	}
	limited := atomic.LoadInt32(&i.maximumSendQuota) > 0
	if i.resending || limited && (len(i.pending) > 0 || atomic.LoadInt32(&i.sendQuota) <= 0) {
		i.pending = append(i.pending, m.PacketID)
		if !announced {
			token = i.order[m.PacketID]
			i.announcing[m.PacketID] = token
		}
		return true, true, token, nil
	}
	if limited {
		i.held[m.PacketID] = struct{}{}
		atomic.AddInt32(&i.sendQuota, -1)
	}
	return true, false, i.order[m.PacketID], nil
}

// announced lets go packet id, waiting since enqueue gave it token, once its
// OnQosPublish has returned.
func (i *Inflight) announced(id uint16, token uint64) {
	i.Lock()
	var dropped []packets.Packet
	if t, ok := i.announcing[id]; ok && t == token {
		delete(i.announcing, id)
		dropped = i.release()
	}
	i.Unlock()
	i.reportDropped(dropped)
}

// waiting reports whether packet id waits for send quota. The caller holds
// the lock.
func (i *Inflight) waiting(id uint16) bool {
	for _, p := range i.pending {
		if p == id {
			return true
		}
	}
	return false
}

// Get returns an inflight packet by packet id.
func (i *Inflight) Get(id uint16) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	if m, ok := i.internal[id]; ok {
		return *m, true
	}

	return packets.Packet{}, false
}

// has reports whether a delivery is in flight under packet id, without
// copying it out (every new delivery asks, to pick its id).
func (i *Inflight) has(id uint16) bool {
	i.RLock()
	defer i.RUnlock()
	_, ok := i.internal[id]
	return ok
}

// GetReceived returns the ack of the client's own flow with packet id.
func (i *Inflight) GetReceived(id uint16) (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()
	m, ok := i.received[id]
	return m, ok
}

// DeleteReceived removes the ack of the client's own flow with packet id.
// Returns true if it existed.
func (i *Inflight) DeleteReceived(id uint16) bool {
	i.Lock()
	defer i.Unlock()
	_, ok := i.received[id]
	delete(i.received, id)
	return ok
}

// deleteFlow removes pk, a packet GetAll returned, from the map it is in.
func (i *Inflight) deleteFlow(pk packets.Packet) bool {
	if isReceived(pk) {
		return i.DeleteReceived(pk.PacketID)
	}
	return i.Delete(pk.PacketID)
}

// Len returns the number of inflight messages, of both directions.
func (i *Inflight) Len() int {
	i.RLock()
	defer i.RUnlock()
	return len(i.internal) + len(i.received)
}

// Clone returns a new instance of Inflight with the same message data.
// This is used when transferring inflights from a taken-over session.
// The messages waiting for send quota still wait, in order; the quota
// itself, which belongs to a network connection, is not copied.
func (i *Inflight) Clone() *Inflight {
	i.RLock()
	defer i.RUnlock()
	return i.clone()
}

// moveTo hands the in-flight messages of a session cl takes over to cl:
// their clone, adopted by cl, becomes cl's inflights (if there were any), and
// from then on enqueue hands each delivery to this map on to cl. A
// publisher's fan-out may have found the session's previous client before cl
// took its place: its delivery, stored here after the clone, was never
// resent, nor acknowledged. cl's inflights are set under this map's lock,
// before it is marked moved: a delivery handed on finds them.
func (i *Inflight) moveTo(cl *Client) {
	i.Lock()
	defer i.Unlock()
	if len(i.internal) > 0 || len(i.received) > 0 {
		c := i.clone()
		c.adopt(cl) // this connection's quotas; deliveries wait for the resend
		cl.State.Inflight = c
	}
	i.movedTo = cl
}

// clone is Clone. The caller holds the lock.
func (i *Inflight) clone() *Inflight {
	c := NewInflights()
	for k, v := range i.internal {
		c.internal[k] = newInflightPacket(*v) // its own: each map pools what it deletes
	}
	for k, v := range i.received {
		c.received[k] = v
	}
	for k, v := range i.order {
		c.order[k] = v
	}
	c.seq = i.seq
	c.pending = append([]uint16(nil), i.pending...)
	return c
}

// sorted returns the packets in the order they were created, those of the
// same second in the order they were stored. The caller holds the lock.
func (i *Inflight) sorted(keep func(id uint16) bool) []packets.Packet {
	m := []packets.Packet{}
	for id, v := range i.internal {
		if keep(id) {
			m = append(m, *v)
		}
	}
	sort.Slice(m, func(a, b int) bool {
		if m[a].Created != m[b].Created {
			return m[a].Created < m[b].Created
		}
		return i.order[m[a].PacketID] < i.order[m[b].PacketID]
	})
	return m
}

// GetAll returns all the inflight messages, the server's deliveries in order
// then the acks of the client's flows, or if immediate, the deliveries
// waiting for send quota, in the order they will be sent.
func (i *Inflight) GetAll(immediate bool) []packets.Packet {
	i.RLock()
	defer i.RUnlock()

	if immediate {
		m := []packets.Packet{}
		for _, id := range i.pending {
			if pk, ok := i.internal[id]; ok {
				m = append(m, *pk)
			}
		}
		return m
	}

	return append(i.sorted(func(uint16) bool { return true }), i.receivedSorted()...)
}

// receivedSorted returns the acks of the client's flows, oldest first. The
// caller holds the lock.
func (i *Inflight) receivedSorted() []packets.Packet {
	m := make([]packets.Packet, 0, len(i.received))
	for _, v := range i.received {
		m = append(m, v)
	}
	sort.Slice(m, func(a, b int) bool {
		if m[a].Created != m[b].Created {
			return m[a].Created < m[b].Created
		}
		return m[a].PacketID < m[b].PacketID
	})
	return m
}

// NextImmediate returns the next inflight packet waiting for send quota.
// The quota's return sends it: callers need not.
func (i *Inflight) NextImmediate() (packets.Packet, bool) {
	i.RLock()
	defer i.RUnlock()

	for _, id := range i.pending {
		if pk, ok := i.internal[id]; ok {
			return *pk, true
		}
	}

	return packets.Packet{}, false
}

// Delete removes an in-flight message from the map. Returns true if the message existed.
// A message holding a unit of send quota gives it to the first message waiting,
// which is queued for writing, or back to the quota.
func (i *Inflight) Delete(id uint16) bool {
	return i.remove(id, nil)
}

// remove is Delete, of the message under id only if it is one that match,
// if not nil, accepts (held: it holds a unit of send quota).
func (i *Inflight) remove(id uint16, match func(pk packets.Packet, held bool) bool) bool {
	i.Lock()
	pk, ok := i.internal[id]
	if ok && match != nil {
		_, held := i.held[id]
		ok = match(*pk, held)
	}
	var dropped []packets.Packet
	if ok {
		i.dropInflight(id)
		delete(i.order, id)
		if _, held := i.held[id]; held {
			delete(i.held, id)
			i.giveSendQuota()
			dropped = i.release()
		} else if _, ok := i.announcing[id]; ok {
			delete(i.announcing, id)
			i.unqueue(id)
			dropped = i.release() // it may have held back those behind it
		} else {
			i.unqueue(id)
		}
	}
	i.Unlock()
	i.reportDropped(dropped)

	return ok
}

// discard deletes packet id if it still holds the message pk, written (or
// about to be) from a copy of it: an id freed meanwhile may hold another.
func (i *Inflight) discard(pk packets.Packet) bool {
	return i.remove(pk.PacketID, func(cur packets.Packet, _ bool) bool {
		return cur.FixedHeader.Type == pk.FixedHeader.Type && cur.Created == pk.Created &&
			cur.TopicName == pk.TopicName && samePayload(cur.Payload, pk.Payload)
	})
}

// queueSent queues pk, delivery id, on the outbound queue of cl, if there
// is room and cl's connection is open, and then marks it sent, if it is
// still the message enqueue gave token (its place in the order). Its DUP
// flag is set in the map, not on the copy queued, so that a later send of
// it, from the map, is a re-delivery [MQTT-3.3.1-1], and its expiry no
// longer deletes it (ClearExpiredInflights). All of it happens under the
// map's lock, so that a session taken over (moveTo clones the map after
// the previous connection is closed) clones it marked if it was queued to
// that connection while open, and unmarked if not: a delivery for a closed
// connection is not queued (closed), and stays for the resend. queued
// reports whether the outbound queue took pk.
func (i *Inflight) queueSent(id uint16, token uint64, cl *Client, pk *packets.Packet) (queued, closed bool) {
	i.Lock()
	defer i.Unlock()
	if cl.Closed() {
		return false, true
	}
	select {
	case cl.State.outbound <- pk:
	default:
		return false, false
	}
	if p, ok := i.internal[id]; ok && i.order[id] == token {
		p.FixedHeader.Dup = true
	}
	return true, false
}

// SetCreated sets the creation time of delivery id to created, if it is
// still the message with payload (the same bytes in memory), in place: the
// rest of the packet, whether it was sent included, stays as it is now,
// where a Set of a copy read earlier could take back what happened since.
// It reports whether it did.
func (i *Inflight) SetCreated(id uint16, payload []byte, created int64) bool {
	i.Lock()
	defer i.Unlock()
	p, ok := i.internal[id]
	if !ok || !samePayload(p.Payload, payload) {
		return false
	}
	p.Created = created
	return true
}

// samePayload reports whether a and b are the same bytes in memory (the
// copies of an in-flight message share its payload).
func samePayload(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// unqueue takes packet id out of the queue waiting for send quota. The
// caller holds the lock.
func (i *Inflight) unqueue(id uint16) {
	for n, p := range i.pending {
		if p == id {
			i.pending = append(i.pending[:n], i.pending[n+1:]...)
			return
		}
	}
}

// giveSendQuota returns a unit of send quota. The caller holds the lock.
func (i *Inflight) giveSendQuota() {
	if atomic.LoadInt32(&i.sendQuota) < atomic.LoadInt32(&i.maximumSendQuota) {
		atomic.AddInt32(&i.sendQuota, 1)
	}
}

// release queues the messages waiting for send quota for writing, in order,
// while quota is free, each taking a unit. A message the client's outbound
// queue has no room for is dropped, as publishToClient drops a delivery
// then, and returned for reportDropped; one for a client whose connection
// is closed waits for the session's resend. The caller holds the lock:
// messages join the outbound queue in the order they leave this one.
func (i *Inflight) release() (dropped []packets.Packet) {
	limited := atomic.LoadInt32(&i.maximumSendQuota) > 0
	for len(i.pending) > 0 && !i.resending && (!limited || atomic.LoadInt32(&i.sendQuota) > 0) {
		id := i.pending[0]
		if _, ok := i.announcing[id]; ok {
			return dropped // announced releases it, and those behind it
		}
		p, ok := i.internal[id]
		if !ok || p.FixedHeader.Type != packets.Publish { // gone
			i.pending = i.pending[1:]
			continue
		}
		pk := *p
		switch i.client.queueReleased(pk) {
		case releaseOffline:
			return dropped
		case releaseDropped:
			i.pending = i.pending[1:]
			i.dropInflight(id)
			delete(i.order, id)
			dropped = append(dropped, pk)
			continue
		}
		i.pending = i.pending[1:]
		p.FixedHeader.Dup = true // sent: a later send is a re-delivery (its queued copy is as it was)
		if limited {
			i.held[id] = struct{}{}
			atomic.AddInt32(&i.sendQuota, -1)
		}
	}
	return dropped
}

// reportDropped counts and reports the messages release dropped, without
// the lock (hooks may read the map).
func (i *Inflight) reportDropped(dropped []packets.Packet) {
	if len(dropped) == 0 || i.client == nil {
		return
	}
	cl := i.client
	for _, pk := range dropped {
		atomic.AddInt64(&cl.ops.info.MessagesDropped, 1)
		atomic.AddInt64(&cl.ops.info.Inflight, -1)
		cl.ops.log.Warn("released in-flight message dropped: client writes pending exceeded", "client", cl.ID, "packet_id", pk.PacketID)
		cl.ops.hooks.OnPublishDropped(cl, pk)
		cl.ops.hooks.OnQosDropped(cl, pk)
	}
}

// adopt makes a clone of a taken-over session's in-flight messages the
// inflights of cl, with the quotas ParseConnect set for cl's connection.
// New deliveries wait until the session is resent (ResendInflightMessages).
func (i *Inflight) adopt(cl *Client) {
	i.Lock()
	defer i.Unlock()
	i.client = cl
	i.resending = true
	i.receiveQuota = atomic.LoadInt32(&cl.State.Inflight.receiveQuota)
	i.maximumReceiveQuota = atomic.LoadInt32(&cl.State.Inflight.maximumReceiveQuota)
	i.maximumSendQuota = atomic.LoadInt32(&cl.State.Inflight.maximumSendQuota)
	i.sendQuota = i.maximumSendQuota
}

// resend returns the in-flight packets to write again on a new connection,
// in order, and waits the PUBLISH packets beyond the connection's send
// quota, in order, ahead of those that were never sent; held returns those.
// It forgets the previous connection's quota: the send quota is
// re-initialised with each network connection (MQTT 5 §4.9). New deliveries
// wait until resent.
func (i *Inflight) resend() (out, held []packets.Packet) {
	i.Lock()
	defer i.Unlock()
	i.init()
	i.resending = true
	i.held = map[uint16]struct{}{}
	limit := atomic.LoadInt32(&i.maximumSendQuota)
	atomic.StoreInt32(&i.sendQuota, limit)
	queued := make(map[uint16]bool, len(i.pending))
	for _, id := range i.pending {
		queued[id] = true
	}
	var waiting []uint16
	for _, pk := range i.sorted(func(id uint16) bool { return !queued[id] }) {
		switch pk.FixedHeader.Type {
		case packets.Publish:
			pk.FixedHeader.Dup = true // [MQTT-3.3.1-1] [MQTT-3.3.1-3]
			if limit == 0 {
				*i.internal[pk.PacketID] = pk // sent now: marked (see queueSent)
				out = append(out, pk)
			} else if len(waiting) == 0 && atomic.LoadInt32(&i.sendQuota) > 0 {
				*i.internal[pk.PacketID] = pk
				i.held[pk.PacketID] = struct{}{}
				atomic.AddInt32(&i.sendQuota, -1)
				out = append(out, pk)
			} else {
				// The map's copy keeps whether it was ever sent (one made
				// while the client was away was not, and may still expire);
				// release marks it when it goes.
				waiting = append(waiting, pk.PacketID)
				held = append(held, pk)
			}
		case packets.Pubrel:
			if limit > 0 && atomic.LoadInt32(&i.sendQuota) > 0 {
				i.held[pk.PacketID] = struct{}{}
				atomic.AddInt32(&i.sendQuota, -1)
			}
			out = append(out, pk)
		default:
			out = append(out, pk)
		}
	}
	i.pending = append(waiting, i.pending...)
	return append(out, i.receivedSorted()...), held
}

// resent ends a resend: the messages waiting are released while quota is free.
func (i *Inflight) resent() {
	i.Lock()
	i.resending = false
	dropped := i.release()
	i.Unlock()
	i.reportDropped(dropped)
}

// TakeRecieveQuota reduces the receive quota by 1.
func (i *Inflight) DecreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) > 0 {
		atomic.AddInt32(&i.receiveQuota, -1)
	}
}

// TakeRecieveQuota increases the receive quota by 1.
func (i *Inflight) IncreaseReceiveQuota() {
	if atomic.LoadInt32(&i.receiveQuota) < atomic.LoadInt32(&i.maximumReceiveQuota) {
		atomic.AddInt32(&i.receiveQuota, 1)
	}
}

// ResetReceiveQuota resets the receive quota to the maximum allowed value.
func (i *Inflight) ResetReceiveQuota(n int32) {
	atomic.StoreInt32(&i.receiveQuota, n)
	atomic.StoreInt32(&i.maximumReceiveQuota, n)
}

// DecreaseSendQuota reduces the send quota by 1. The Inflight keeps the
// quota itself as deliveries are admitted and deleted; this is for tests.
func (i *Inflight) DecreaseSendQuota() {
	i.Lock()
	defer i.Unlock()
	if atomic.LoadInt32(&i.sendQuota) > 0 {
		atomic.AddInt32(&i.sendQuota, -1)
	}
}

// IncreaseSendQuota increases the send quota by 1. The Inflight keeps the
// quota itself as deliveries are admitted and deleted; this is for tests.
func (i *Inflight) IncreaseSendQuota() {
	i.Lock()
	defer i.Unlock()
	i.giveSendQuota()
}

// ResetSendQuota sets the maximum send quota (the client's Receive Maximum;
// 0: none), less the units held by messages in flight.
func (i *Inflight) ResetSendQuota(n int32) {
	i.Lock()
	q := n - int32(len(i.held))
	if q < 0 {
		q = 0
	}
	atomic.StoreInt32(&i.sendQuota, q)
	atomic.StoreInt32(&i.maximumSendQuota, n)
	dropped := i.release()
	i.Unlock()
	i.reportDropped(dropped)
}
