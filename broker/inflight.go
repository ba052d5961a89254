package broker

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"

	"github.com/veil-iot/veil/hooks"
)

// inflightRecord is an in-flight message as the state store keeps it:
// mochi's record, and what the enforcer must know of it after a restart
// (hooks.StateStore): when its delivery was decided, in Sent (mochi
// passes the creation time there, and reads neither back), and the view it
// was decided under, when that may be looser later. The view is a field
// mochi's own hook does not know, and ignores.
type inflightRecord struct {
	storage.Message
	View *hooks.StoredView `json:"veil_view,omitempty"`
	// Raw says the enforcer kept no view because live data allowed the
	// delivery raw (a record without either was not told of).
	Raw bool `json:"veil_raw,omitempty"`
}

// toldView is a view KeepView was told of, waiting for the store's
// OnQosPublish of the same delivery (the enforcer's runs first).
type toldView struct {
	client  string
	payload *byte // the delivery's payload: mochi hands both hooks the same slice
	view    *hooks.StoredView
}

// MarshalBinary implements storage.Serializable.
func (r *inflightRecord) MarshalBinary() ([]byte, error) { return json.Marshal(r) }

// UnmarshalBinary reads a record, also one mochi's hook wrote.
func (r *inflightRecord) UnmarshalBinary(b []byte) error { return json.Unmarshal(b, r) }

// OnQosPublish implements mqtt.Hook. The PUBACK of a QoS 1 publish a
// client sent is in flight only while mochi writes it (it completes it in
// the same call, or, if the write fails, leaves it to the session's next
// connection to resend), so it is not recorded: a crash loses at most an
// acknowledgement the client will ask for again by resending.
//
// A delivery is stored with when it was decided (now: mochi calls this
// right after its ACL check); for a retained message that is its
// subscription, not its publish. A resend (DUP) of the same message keeps
// what was stored of it: the enforcer restamps the creation times of a
// burst a second apart to keep its resend order.
func (s *stateStore) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, _ int) {
	if pk.FixedHeader.Type == packets.Puback || cl.IsTakenOver() {
		// (A delivery to a replaced connection: if mochi moved it to the
		// new one, the resend records it, with what KeepView was told.)
		return
	}
	if hooks.ClientsOwnFlow(pk) { // a PUBREC (or its PUBCOMP, resent) of the client's QoS 2 PUBLISH
		key := ownFlowKey(cl.ID, pk.PacketID)
		if !s.ownFlows.Load() { // before the record: its flow's end must see it
			s.ownFlows.Store(true)
		}
		s.record(key, &inflightRecord{Message: storedMessage(key, storage.InflightKey, cl.ID, pk, sent)})
		return
	}
	id := inflightKey(cl.ID, pk.PacketID)
	r := &inflightRecord{Message: storedMessage(id, storage.InflightKey, cl.ID, pk, sent)}
	if pk.FixedHeader.Dup {
		s.commitMu.Lock()
		old := s.inflight(id)
		s.commitMu.Unlock()
		if old != nil && old.TopicName == pk.TopicName && bytes.Equal(old.Payload, pk.Payload) {
			r.Created, r.Sent, r.View, r.Raw = min(r.Created, old.Created), old.Sent, old.View, old.Raw
			s.record(id, r)
			return
		}
	}
	r.Sent = s.now().Unix()
	s.recordIf(id, r, func() bool { // one lock for both, on every QoS 1/2 delivery
		// (An empty payload has no address of its own to tell it by, and
		// nothing a view could rewrite.)
		if t, ok := s.told[id]; ok && len(pk.Payload) > 0 && t.payload == unsafe.SliceData(pk.Payload) {
			r.View, r.Raw = t.view, t.view == nil
		}
		delete(s.told, id)
		return true
	})
}

// inflight returns the in-flight record stored under key, pending or in
// the file. The caller holds commitMu, so no commit takes the pending
// changes meanwhile. Only resends look, not every delivery.
func (s *stateStore) inflight(key string) *inflightRecord {
	s.mu.Lock()
	v, pending := s.pending[key]
	s.mu.Unlock()
	if pending {
		r, _ := v.(*inflightRecord)
		return r
	}
	var r *inflightRecord
	_ = s.db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(stateBucket).Get([]byte(key)); b != nil {
			r = new(inflightRecord)
			return r.UnmarshalBinary(b)
		}
		return nil
	})
	return r
}

// KeepView implements hooks.StateStore: the view is held until the store
// records the delivery, a moment later on the same goroutine, and written
// with it: no commit, nor a crash, can come between the two.
func (s *stateStore) KeepView(client string, pk packets.Packet, v *hooks.StoredView) {
	key := inflightKey(client, pk.PacketID)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.told == nil {
		s.told = map[string]toldView{}
	}
	s.told[key] = toldView{client: client, payload: unsafe.SliceData(pk.Payload), view: v}
}

// Dropped implements hooks.StateStore: the stored copy of an in-flight
// message the enforcer took out of a session goes too, or it would come
// back at the next start.
func (s *stateStore) Dropped(client string, packetID uint16) {
	s.record(inflightKey(client, packetID), nil)
}

// Restored implements hooks.StateStore: what was kept of an in-flight
// message read at start, while it is the message under its id (record
// forgets it once the message is acknowledged, dropped or replaced).
func (s *stateStore) Restored(client string, packetID uint16) (hooks.RestoredDelivery, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.restored[inflightKey(client, packetID)]
	return r, ok
}

// StoredInflightMessages implements mqtt.Hook, with packet ids restored
// from the key ("IFM_{client}:{id}") where the record lacks one. What the
// enforcer must know of them is kept for Restored.
//
// A record of the client's own QoS flow (an ack mochi answered its PUBLISH
// with) under the key of a delivery, as this store wrote it before the two
// directions had keys of their own, and as mochi's bolt hook writes it, is
// moved to its own key (ownFlowKey): its flow's end deletes that one, and
// a delivery with its packet id takes the other.
func (s *stateStore) StoredInflightMessages() ([]storage.Message, error) {
	var msgs []storage.Message
	var orphans []string
	var moved []*inflightRecord // under their new keys, the old ones in orphans
	defer func() {
		if len(moved) > 0 {
			s.ownFlows.Store(true)
		}
		for _, r := range moved {
			s.record(r.ID, r) // before the old key goes
		}
		// Not held back: the old key's delete must not reach the file
		// before the new key does.
		s.mu.Lock()
		for _, r := range moved {
			delete(s.young, r.ID)
		}
		s.mu.Unlock()
		s.forget(orphans)
	}()
	restored := map[string]hooks.RestoredDelivery{}
	err := s.each(inflightPrefix, func(b []byte) error {
		var r inflightRecord
		if err := r.UnmarshalBinary(b); err != nil {
			return err
		}
		if s.orphan(r.Client) {
			orphans = append(orphans, r.ID)
			return nil
		}
		if r.PacketID == 0 {
			if j := strings.LastIndexByte(r.ID, ':'); j >= 0 {
				if id, err := strconv.ParseUint(r.ID[j+1:], 10, 16); err == nil {
					r.PacketID = uint16(id)
				}
			}
		}
		if ownFlowRecord(r.FixedHeader.Type) && r.ID != "" && r.PacketID != 0 {
			if key := ownFlowKey(r.Client, r.PacketID); r.ID != key {
				orphans = append(orphans, r.ID)
				m := r
				m.ID = key
				moved = append(moved, &m)
				r.ID = key
			}
		}
		d := hooks.RestoredDelivery{View: r.View, Raw: r.Raw}
		if r.Sent > 0 {
			d.DecidedAt = time.Unix(r.Sent, 0)
		}
		restored[r.ID] = d
		msgs = append(msgs, r.Message)
		return nil
	})
	s.mu.Lock()
	s.restored = restored
	s.mu.Unlock()
	return msgs, err
}

// ownFlowRecord reports whether a stored in-flight record of packet type
// typ belongs to a QoS flow the client started: the store records the
// acks mochi answers the client's PUBLISH with, and of the server's
// deliveries only the PUBLISH and its PUBREL (never a client's packet).
func ownFlowRecord(typ byte) bool {
	switch typ {
	case packets.Puback, packets.Pubrec, packets.Pubcomp:
		return true
	}
	return false
}
