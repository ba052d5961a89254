package broker

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
	"github.com/veil-iot/veil/hooks"
	"go.etcd.io/bbolt"
)

// stateStore keeps mochi's session state — clients, subscriptions,
// retained and in-flight messages, $SYS counters — in a bbolt file, in the
// same keys, bucket and encoding as mochi's own bolt hook, so a data
// directory written by either is read by the other.
//
// It differs from mochi's hook in when it writes. Mochi commits every
// change in its own transaction, each ending in an fsync: a QoS 1 delivery
// costs two (the in-flight message, then its acknowledgement), which caps
// QoS 1 throughput at the disk's sync rate. stateStore writes behind: a
// change is recorded in memory, the latest per key, and all changes of an
// interval are committed in one transaction. An in-flight message waits
// for the commit after the one it was recorded before, so one acknowledged
// within one to two intervals never touches the disk. The price is the
// interval: if the process or the machine dies, the changes of the last
// interval are lost, and the in-flight messages of the last two (a clean
// shutdown commits everything). Interval 0 commits each change before the
// hook returns, as mochi's hook does.
//
// It also restores in-flight messages' packet ids, which mochi v2.7.9's bolt
// hook does not store: without them every resend after a restart fails
// with "missing packet id" and the client is disconnected on each reconnect.
type stateStore struct {
	mqtt.HookBase
	path     string
	interval time.Duration

	db       *bbolt.DB
	commitMu sync.Mutex                      // one transaction at a time, in order
	mu       sync.Mutex                      // guards pending, onDisk, closed and the maps below
	pending  map[string]storage.Serializable // key → value to put; nil = delete
	// writing is the batch a commit is writing: out of pending, and not in
	// the file until the commit ends (keysOf reads it without commitMu).
	writing map[string]storage.Serializable

	// onDisk holds the in-flight keys that may be in the file: found there
	// at start, or handed to a commit and not deleted since. Deleting an
	// in-flight key outside it only drops what is pending for it, so a
	// QoS 1 delivery acknowledged within the interval costs the commit
	// nothing, not even a lookup.
	onDisk map[string]struct{}
	// young holds the in-flight puts recorded since the last commit took
	// the pending changes, of keys neither pending nor in the file before.
	// A commit holds them back for the next one: a delivery acknowledged
	// within one to two intervals never reaches the disk, and at full rate
	// most are acknowledged before the next commit but after the one they
	// were recorded before. A put is held back once (recordIf).
	young map[string]struct{}

	closed bool
	stop   chan struct{}
	done   chan struct{}

	commits atomic.Int64 // transactions committed
	changes atomic.Int64 // changes recorded (puts and deletes)

	// ownFlows says a record of a client's own QoS flow (ownFlowKey) may
	// be pending or in the file: one was recorded, or found at start. Until
	// then the end of such a flow has nothing to delete, and skips the
	// lock: mochi ends the flow of every QoS 1 PUBLISH a client sends (its
	// PUBACK, which is never recorded), as often as the broker delivers.
	ownFlows atomic.Bool

	// now is the clock the decision times of deliveries are read from (the
	// enforcer's: it decides a restored message as of that time).
	now func() time.Time
	// server, when set, tells which client holds an id now: a connection
	// resumed meanwhile owns the session's records.
	server *mqtt.Server
	// maxExpiry is the broker's maximum session expiry interval (seconds),
	// which mochi applies to a session without an interval of its own.
	maxExpiry uint32
	// restored holds, by in-flight key, what was kept of each in-flight
	// message read at start, until the enforcer asks (Restored).
	restored map[string]hooks.RestoredDelivery // under mu
	// told holds, by in-flight key, the view KeepView was told of a
	// delivery until OnQosPublish records it.
	told map[string]toldView // under mu
	// purposes holds, by client id and filter, the purposes the stored
	// subscriptions declared, as read at start (Purposes).
	purposes map[string][]hooks.SubscriptionPurpose // under mu
	// kept holds, by client id, whether mochi keeps the session read at
	// start (StoredClients); nil until then.
	kept map[string]bool // under mu
}

// stateBucket is mochi's bolt hook's bucket name.
var stateBucket = []byte("mochi")

func newStateStore(path string, interval time.Duration) *stateStore {
	return &stateStore{path: path, interval: interval, pending: map[string]storage.Serializable{}, onDisk: map[string]struct{}{},
		young: map[string]struct{}{}, now: time.Now}
}

// ID implements mqtt.Hook.
func (s *stateStore) ID() string { return "veil-state" }

// Provides implements mqtt.Hook.
func (s *stateStore) Provides(b byte) bool { return stateEvents.Has(b) }

var stateEvents = hooks.Events(
	mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnSubscribed, mqtt.OnUnsubscribed,
	mqtt.OnRetainMessage, mqtt.OnWillSent, mqtt.OnQosPublish, mqtt.OnQosComplete,
	mqtt.OnQosDropped, mqtt.OnSysInfoTick, mqtt.OnClientExpired, mqtt.OnRetainedExpired,
	mqtt.StoredClients, mqtt.StoredInflightMessages, mqtt.StoredRetainedMessages,
	mqtt.StoredSubscriptions, mqtt.StoredSysInfo,
)

// Init opens (or creates) the file and starts the committer.
func (s *stateStore) Init(any) error {
	db, err := bbolt.Open(s.path, 0o600, &bbolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return fmt.Errorf("%s: %w", s.path, err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(networksBucket); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(stateBucket)
		return err
	}); err != nil {
		_ = db.Close()
		return fmt.Errorf("%s: %w", s.path, err)
	}
	s.db = db
	if err := s.scan(inflightPrefix, func(k, _ []byte) {
		s.onDisk[string(k)] = struct{}{}
		if isOwnFlowKey(k) {
			s.ownFlows.Store(true)
		}
	}); err != nil {
		_ = db.Close()
		return fmt.Errorf("%s: %w", s.path, err)
	}
	if s.interval > 0 {
		s.stop, s.done = make(chan struct{}), make(chan struct{})
		go s.commitLoop()
	}
	return nil
}

// Stop commits what is pending and closes the file. Changes recorded
// after Stop (a client's goroutine still winding down) are dropped, as
// mochi's hook drops them once its file is closed.
func (s *stateStore) Stop() error {
	if s.stop != nil {
		close(s.stop)
		<-s.done
		s.stop = nil
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	err := s.commitAll()
	if s.db != nil {
		err = errors.Join(err, s.db.Close())
	}
	return err
}

func (s *stateStore) commitLoop() {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if err := s.commit(); err != nil {
				s.Log.Error("broker state not saved; retrying", "error", err)
			}
		}
	}
}

// commit writes the pending changes in one transaction, without holding
// up the clients recording new ones meanwhile (they go to the next
// transaction), except in-flight messages recorded since the last commit
// (young), which wait for the next. On failure the changes stay pending,
// behind any newer change of the same key, for the next attempt.
func (s *stateStore) commit() error { return s.commitOf(s.interval > 0) }

// commitAll is commit of every pending change: at stop, nothing waits.
func (s *stateStore) commitAll() error { return s.commitOf(false) }

func (s *stateStore) commitOf(holdYoung bool) error {
	s.commitMu.Lock()
	defer s.commitMu.Unlock()
	batch := s.takePending(holdYoung)
	if len(batch) == 0 {
		return nil
	}
	err := s.write(batch)
	s.committed(batch, err)
	return err
}

// takePending hands the pending changes to a commit, which holds commitMu;
// if holdYoung, the young in-flight puts stay pending, no longer young.
func (s *stateStore) takePending(holdYoung bool) map[string]storage.Serializable {
	s.mu.Lock()
	defer s.mu.Unlock()
	batch := s.pending
	if len(batch) == 0 {
		return nil
	}
	s.pending = make(map[string]storage.Serializable, len(batch))
	if holdYoung {
		for k := range s.young {
			if v, ok := batch[k]; ok && v != nil {
				s.pending[k] = v
				delete(batch, k)
			}
		}
	}
	clear(s.young)
	if len(batch) > 0 {
		s.writing = batch // until committed
	}
	for k, v := range batch {
		if v != nil && isInflight(k) {
			s.onDisk[k] = struct{}{}
		}
	}
	return batch
}

// committed ends the commit of batch: written (err nil), or put back
// behind any newer change of the same key.
func (s *stateStore) committed(batch map[string]storage.Serializable, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writing = nil
	for k, v := range batch {
		switch {
		case err == nil && v == nil:
			delete(s.onDisk, k)
		case err != nil:
			if _, newer := s.pending[k]; !newer {
				s.pending[k] = v
			}
		}
	}
}

// write applies batch in one transaction. Deleting keys that never reached
// the disk (a message acknowledged within the interval) changes nothing
// and commits nothing. Values are encoded here, not when recorded, so a
// message acknowledged within the interval is never encoded either.
func (s *stateStore) write(batch map[string]storage.Serializable) error {
	tx, err := s.db.Begin(true)
	if err != nil {
		return err
	}
	b := tx.Bucket(stateBucket)
	dirty := false
	for k, v := range batch {
		key := []byte(k)
		switch {
		case v != nil:
			var data []byte
			if data, err = v.MarshalBinary(); err != nil {
				s.Log.Error("broker state not encodable, skipped", "key", k, "error", err)
				err = nil
				continue
			}
			err = b.Put(key, data)
			dirty = true
		case b.Get(key) != nil:
			err = b.Delete(key)
			dirty = true
		}
		if err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("key %s: %w", k, err)
		}
	}
	if !dirty {
		return tx.Rollback()
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	s.commits.Add(1)
	return nil
}

// record notes a change: v is the value to store, nil deletes key. v must
// not change afterwards (the hooks build it from copies, and mochi never
// modifies a packet's payload).
func (s *stateStore) record(key string, v storage.Serializable) { s.recordIf(key, v, nil) }

// recordIf is record if ok, asked under s.mu, says so: a check that must
// not be overtaken by another change of the key, or a last touch to v
// from state the lock guards.
func (s *stateStore) recordIf(key string, v storage.Serializable, ok func() bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.Log.Debug("broker state change after stop, dropped", "key", key)
		return
	}
	if ok != nil && !ok() {
		s.mu.Unlock()
		return
	}
	// A put is held back (young) once: not again when it replaces a put
	// still pending (held back already, or put back by a failed commit),
	// or a resend at every reconnect faster than the interval kept it from
	// the file for good; nor when the key may be in the file, whose value
	// (a message acknowledged meanwhile, its delete pending) the next
	// commit must replace.
	prev, hadPut := s.pending[key]
	hadPut = hadPut && prev != nil
	_, wasYoung := s.young[key]
	if v == nil && isInflight(key) && !s.mayBeInFile(key) {
		delete(s.pending, key)
	} else {
		s.pending[key] = v
	}
	if v != nil && isInflight(key) && (wasYoung || !hadPut && !s.mayBeInFile(key)) {
		s.young[key] = struct{}{}
	} else {
		delete(s.young, key)
	}
	if r, put := v.(*inflightRecord); v == nil || put && !r.FixedHeader.Dup {
		delete(s.restored, key) // the message read at start is gone, its id maybe another's
	}
	if v == nil {
		delete(s.told, key)
	}
	s.mu.Unlock()
	s.changes.Add(1)
	if s.interval <= 0 {
		if err := s.commit(); err != nil {
			s.Log.Error("broker state not saved", "key", key, "error", err)
		}
	}
}

// mayBeInFile reports whether the in-flight key may be in the file:
// onDisk holds every in-flight key in it (found at start, or handed to a
// commit and not deleted since), so one outside it was at most recorded
// since the last commit took the pending changes. The caller holds s.mu.
func (s *stateStore) mayBeInFile(key string) bool {
	_, maybe := s.onDisk[key]
	return maybe
}

// inflightPrefix begins the keys of in-flight messages.
const inflightPrefix = storage.InflightKey + "_"

func isInflight(key string) bool { return strings.HasPrefix(key, inflightPrefix) }

// Keys as mochi's bolt hook writes them.
func clientKey(id string) string { return storage.ClientKey + "_" + id }
func subscriptionKey(id, filter string) string {
	return storage.SubscriptionKey + "_" + id + ":" + filter
}
func retainedKey(topic string) string { return storage.RetainedKey + "_" + topic }

// inflightKey is "IFM_{client}:{packet id}", built in one allocation for
// client ids up to about 80 bytes: it is built twice for every QoS 1 or 2
// delivery.
func inflightKey(client string, packetID uint16) string {
	var buf [96]byte
	b := append(append(append(buf[:0], inflightPrefix...), client...), ':')
	return string(strconv.AppendUint(b, uint64(packetID), 10))
}

// OnSessionEstablished implements mqtt.Hook.
func (s *stateStore) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) { s.saveClient(cl) }

// OnWillSent implements mqtt.Hook: the client record no longer holds the will.
// (A will is sent as the connection ends, or after its delay: the session
// is stored with when it ended, else a restart would count it as connected.)
func (s *stateStore) OnWillSent(cl *mqtt.Client, _ packets.Packet) {
	s.saveClientStopped(cl, cl.StopTime())
}

func (s *stateStore) saveClient(cl *mqtt.Client) { s.saveClientStopped(cl, 0) }

// clientRecord is a session as the state store keeps it: mochi's record,
// and when its connection ended (a field mochi's own hook does not know,
// and ignores), so that a session whose expiry ran out while the broker was
// down is not restored for another whole interval (mochi restarts the
// clock of every session it restores).
type clientRecord struct {
	storage.Client
	Stopped int64 `json:"veil_stopped,omitempty"` // unix seconds; 0: connected when last stored
}

// MarshalBinary implements storage.Serializable.
func (r *clientRecord) MarshalBinary() ([]byte, error) { return json.Marshal(r) }

// UnmarshalBinary reads a record, also one mochi's hook wrote.
func (r *clientRecord) UnmarshalBinary(b []byte) error { return json.Unmarshal(b, r) }

// saveClientStopped records cl's session, whose connection ended at
// stopped (unix seconds; 0: connected).
func (s *stateStore) saveClientStopped(cl *mqtt.Client, stopped int64) {
	props := cl.Properties.Props.Copy(false)
	// Not for a late hook of a connection another one resumed: asked under
	// the lock, since the new one records only once mochi holds it.
	s.recordIf(clientKey(cl.ID), &clientRecord{Stopped: stopped, Client: storage.Client{
		ID:              cl.ID,
		T:               storage.ClientKey,
		Remote:          cl.Net.Remote,
		Listener:        cl.Net.Listener,
		Username:        cl.Properties.Username,
		Clean:           cl.Properties.Clean,
		ProtocolVersion: cl.Properties.ProtocolVersion,
		Properties: storage.ClientProperties{
			SessionExpiryInterval: props.SessionExpiryInterval,
			// Without the flag, mochi expires a restored session after its
			// own maximum (days), not the interval the client asked for.
			SessionExpiryIntervalFlag: props.SessionExpiryIntervalFlag,
			AuthenticationMethod:      props.AuthenticationMethod,
			AuthenticationData:        props.AuthenticationData,
			RequestProblemInfo:        props.RequestProblemInfo,
			RequestProblemInfoFlag:    props.RequestProblemInfoFlag,
			RequestResponseInfo:       props.RequestResponseInfo,
			ReceiveMaximum:            props.ReceiveMaximum,
			TopicAliasMaximum:         props.TopicAliasMaximum,
			User:                      props.User,
			MaximumPacketSize:         props.MaximumPacketSize,
		},
		Will: storage.ClientWill(cl.Properties.Will),
	}}, func() bool { return !s.replaced(cl) && !cl.IsTakenOver() })
}

// replaced reports whether another client holds cl's id now.
func (s *stateStore) replaced(cl *mqtt.Client) bool {
	if s.server == nil {
		return false
	}
	cur, ok := s.server.Clients.Get(cl.ID)
	return ok && cur != cl
}

// OnDisconnect implements mqtt.Hook: a session that ends is forgotten,
// one taken over by a new connection is not.
func (s *stateStore) OnDisconnect(cl *mqtt.Client, _ error, expire bool) {
	switch {
	case cl.IsTakenOver(): // the records are the new connection's
	case expire:
		// Also one stopped for a new connection taking its id whose end
		// took the id's lock first (patch 0024): the new connection then
		// starts a session of its own.
		s.record(clientKey(cl.ID), nil)
	case errors.Is(cl.StopCause(), packets.ErrSessionTakenOver):
		// Stopped for a new connection, which takes the session over once
		// this end is done, and records it.
	case cl.Net.Conn != nil: // (not a session mochi restores at start)
		s.saveClientStopped(cl, time.Now().Unix()) // mochi's expiry runs on the wall clock
	}
}

// OnClientExpired implements mqtt.Hook. mochi drops an expired session's
// client only: its subscriptions and in-flight messages go here too, or
// they would stay in the file for good (mochi skips them at start, their
// client gone), and so does what was read of them at start.
func (s *stateStore) OnClientExpired(cl *mqtt.Client) {
	if cl.IsTakenOver() || s.replaced(cl) {
		return // resumed meanwhile: the records are the new connection's
	}
	s.record(clientKey(cl.ID), nil)
	for _, k := range s.keysOf(cl.ID) {
		s.record(k, nil)
	}
	s.mu.Lock()
	delete(s.purposes, cl.ID)
	for k, t := range s.told {
		if t.client == cl.ID {
			delete(s.told, k)
		}
	}
	s.mu.Unlock()
}

// keysOf returns the keys of client id's subscriptions and in-flight
// messages, pending or in the file. Keys alone are ambiguous ("SUB_a:b:c"
// is client a's filter "b:c" or client "a:b"'s "c"), so the records say
// whose they are.
//
// It waits for no commit (mochi calls OnClientExpired under the client
// id's lock, which connections of other ids share): it reads the changes
// pending and those a commit is writing first, then the file, so a change
// committed in between is read at least once.
func (s *stateStore) keysOf(id string) []string {
	var keys []string
	whose := func(b []byte) string {
		var rec struct {
			Client string `json:"client"`
		}
		_ = json.Unmarshal(b, &rec)
		return rec.Client
	}
	prefixes := []string{storage.SubscriptionKey + "_" + id + ":", inflightPrefix + id + ":"}
	seen := map[string]bool{}
	s.mu.Lock()
	for _, changes := range []map[string]storage.Serializable{s.pending, s.writing} {
		for k, v := range changes {
			if v == nil || seen[k] || !(strings.HasPrefix(k, prefixes[0]) || strings.HasPrefix(k, prefixes[1])) {
				continue
			}
			if b, err := v.MarshalBinary(); err == nil && whose(b) == id {
				keys = append(keys, k)
				seen[k] = true
			}
		}
	}
	s.mu.Unlock()
	for _, p := range prefixes {
		_ = s.scan(p, func(k, v []byte) {
			if !seen[string(k)] && whose(v) == id {
				keys = append(keys, string(k))
				seen[string(k)] = true
			}
		})
	}
	return keys
}

// OnSubscribed implements mqtt.Hook.
func (s *stateStore) OnSubscribed(cl *mqtt.Client, pk packets.Packet, codes []byte) {
	purpose := hooks.SubscribePurpose(pk)
	for i, f := range pk.Filters {
		if i >= len(codes) {
			break
		}
		if codes[i] > packets.CodeGrantedQos2.Code {
			continue // refused: mochi would subscribe it again at the next start
		}
		id := subscriptionKey(cl.ID, f.Filter)
		s.record(id, &subscriptionRecord{Subscription: storage.Subscription{
			ID: id, T: storage.SubscriptionKey, Client: cl.ID, Qos: codes[i], Filter: f.Filter,
			Identifier: f.Identifier, NoLocal: f.NoLocal, RetainHandling: f.RetainHandling,
			RetainAsPublished: f.RetainAsPublished,
		}, Purpose: purpose, Seq: time.Now().UnixNano()})
	}
}

// subscriptionRecord is a subscription as the state store keeps it:
// mochi's record, and the purpose it declared (a field mochi's own hook
// does not know, and ignores), which the enforcer decides its deliveries
// under after a restart too.
type subscriptionRecord struct {
	storage.Subscription
	Purpose string `json:"veil_purpose,omitempty"`
	// Seq orders the subscriptions of a client as they were made (the wall
	// clock's nanoseconds): the enforcer keeps one purpose per filter
	// without its $share prefix, the last subscription's.
	Seq int64 `json:"veil_seq,omitempty"`
}

// MarshalBinary implements storage.Serializable.
func (r *subscriptionRecord) MarshalBinary() ([]byte, error) { return json.Marshal(r) }

// UnmarshalBinary reads a record, also one mochi's hook wrote.
func (r *subscriptionRecord) UnmarshalBinary(b []byte) error { return json.Unmarshal(b, r) }

// OnUnsubscribed implements mqtt.Hook.
func (s *stateStore) OnUnsubscribed(cl *mqtt.Client, pk packets.Packet) {
	for _, f := range pk.Filters {
		s.record(subscriptionKey(cl.ID, f.Filter), nil)
	}
}

// OnRetainMessage implements mqtt.Hook; r == -1 clears the topic.
func (s *stateStore) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	id := retainedKey(pk.TopicName)
	if r == -1 {
		s.record(id, nil)
		return
	}
	m := storedMessage(id, storage.RetainedKey, cl.ID, pk, 0)
	s.record(id, &m)
}

// OnRetainedExpired implements mqtt.Hook.
func (s *stateStore) OnRetainedExpired(topic string) { s.record(retainedKey(topic), nil) }

// ownFlowKey is "IFM_{client}:c{packet id}", the key of the state of a QoS
// flow the client started (hooks.ClientsOwnFlow): its packet ids are the
// client's, and may be those of deliveries in flight to it.
func ownFlowKey(client string, packetID uint16) string {
	return inflightPrefix + client + ":c" + strconv.FormatUint(uint64(packetID), 10)
}

// isOwnFlowKey reports whether the in-flight key k is an ownFlowKey: a
// client id may hold ':', a packet id does not.
func isOwnFlowKey(k []byte) bool {
	j := bytes.LastIndexByte(k, ':')
	return j >= 0 && j+1 < len(k) && k[j+1] == 'c'
}

// flowKey is the key of the QoS flow pk, handed to a QoS hook, belongs to.
func flowKey(cl *mqtt.Client, pk packets.Packet) string {
	if hooks.ClientsOwnFlow(pk) {
		return ownFlowKey(cl.ID, pk.PacketID)
	}
	return inflightKey(cl.ID, pk.PacketID)
}

// OnQosComplete implements mqtt.Hook.
func (s *stateStore) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if hooks.ClientsOwnFlow(pk) && !s.ownFlows.Load() {
		return
	}
	s.record(flowKey(cl, pk), nil)
}

// OnQosDropped implements mqtt.Hook; not for a session taken over: mochi
// moves its in-flight messages to the new connection, then drops them from
// the old one (a clean start drops them before it marks the old one taken
// over, and they go).
func (s *stateStore) OnQosDropped(cl *mqtt.Client, pk packets.Packet) {
	if cl.IsTakenOver() || hooks.ClientsOwnFlow(pk) && !s.ownFlows.Load() {
		return
	}
	s.record(flowKey(cl, pk), nil)
}

// OnSysInfoTick implements mqtt.Hook.
func (s *stateStore) OnSysInfoTick(info *system.Info) {
	s.record(storage.SysInfoKey, &storage.SystemInfo{ID: storage.SysInfoKey, T: storage.SysInfoKey, Info: *info})
}

// storedMessage is a retained or in-flight message as mochi's bolt hook stores it.
func storedMessage(id, kind, client string, pk packets.Packet, sent int64) storage.Message {
	props := pk.Properties.Copy(false)
	return storage.Message{
		ID: id, T: kind, Client: client, Origin: pk.Origin, FixedHeader: pk.FixedHeader,
		TopicName: pk.TopicName, Payload: pk.Payload, Sent: sent, Created: pk.Created,
		PacketID: pk.PacketID,
		Properties: storage.MessageProperties{
			PayloadFormat:          props.PayloadFormat,
			MessageExpiryInterval:  props.MessageExpiryInterval,
			ContentType:            props.ContentType,
			ResponseTopic:          props.ResponseTopic,
			CorrelationData:        props.CorrelationData,
			SubscriptionIdentifier: props.SubscriptionIdentifier,
			TopicAlias:             props.TopicAlias,
			User:                   props.User,
		},
	}
}

// each calls visit with every stored value whose key starts with prefix,
// reading what was committed (mochi reads the store once, at start). A
// record that does not decode is logged and skipped: one damaged session
// must not keep the broker from starting.
func (s *stateStore) each(prefix string, visit func([]byte) error) error {
	return s.scan(prefix, func(k, v []byte) {
		if err := visit(v); err != nil {
			s.Log.Error("broker state record unreadable, skipped", "key", string(k), "error", err)
		}
	})
}

// scan calls visit with every committed key that starts with prefix, and
// its value; both are valid only during the call.
func (s *stateStore) scan(prefix string, visit func(k, v []byte)) error {
	return s.db.View(func(tx *bbolt.Tx) error {
		c := tx.Bucket(stateBucket).Cursor()
		p := []byte(prefix)
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			visit(k, v)
		}
		return nil
	})
}

// StoredClients implements mqtt.Hook. It notes which sessions mochi keeps
// at start: a session that ends with its connection (MQTT 5 expiry 0, or a
// 3.1.1 clean session), stored because the broker stopped while it was
// connected, is dropped (loadClients), and its subscriptions and in-flight
// messages, read after it, go with it (StoredSubscriptions,
// StoredInflightMessages): mochi would put the subscriptions in its index
// under a client id it no longer holds, for a later session under that id.
func (s *stateStore) StoredClients() (v []storage.Client, err error) {
	kept := map[string]bool{}
	var expired []string
	defer func() { s.forget(expired) }()
	now := time.Now().Unix()
	err = s.each(storage.ClientKey+"_", func(b []byte) error {
		var r clientRecord
		if err := r.UnmarshalBinary(b); err != nil {
			return err
		}
		c := r.Client
		ends := c.ProtocolVersion == 5 && c.Properties.SessionExpiryInterval == 0 || c.ProtocolVersion < 5 && c.Clean
		expiry := s.maxExpiry // as mochi's clearExpiredClients reckons it
		if c.ProtocolVersion == 5 && c.Properties.SessionExpiryIntervalFlag {
			expiry = c.Properties.SessionExpiryInterval
		}
		if !ends && r.Stopped > 0 && r.Stopped+int64(expiry) < now {
			// Expired while the broker was down: not handed to mochi.
			expired = append(expired, clientKey(c.ID))
			kept[c.ID] = false
			return nil
		}
		kept[c.ID] = !ends
		v = append(v, c)
		return nil
	})
	s.mu.Lock()
	s.kept = kept
	s.mu.Unlock()
	return v, err
}

// orphan reports whether a record of client, read at start, belongs to no
// session mochi keeps (StoredClients). The caller deletes it once its scan
// is over (forget): a commit must not open bbolt's write transaction while
// the scan's read transaction is open in the same goroutine (with
// --state-sync 0, record commits at once), which can deadlock on a remap.
func (s *stateStore) orphan(client string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kept != nil && !s.kept[client]
}

// forget deletes keys.
func (s *stateStore) forget(keys []string) {
	for _, k := range keys {
		s.record(k, nil)
	}
}

// StoredSubscriptions implements mqtt.Hook. The purposes they declared are
// kept for the enforcer (Purposes).
func (s *stateStore) StoredSubscriptions() (v []storage.Subscription, err error) {
	var recs []subscriptionRecord
	var orphans []string
	defer func() { s.forget(orphans) }()
	err = s.each(storage.SubscriptionKey+"_", func(b []byte) error {
		var r subscriptionRecord
		if err := r.UnmarshalBinary(b); err != nil {
			return err
		}
		if s.orphan(r.Client) {
			orphans = append(orphans, r.ID)
			return nil
		}
		recs = append(recs, r)
		v = append(v, r.Subscription)
		return nil
	})
	slices.SortStableFunc(recs, func(a, b subscriptionRecord) int {
		return cmp.Or(cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.Filter, b.Filter))
	})
	purposes := map[string][]hooks.SubscriptionPurpose{}
	for _, r := range recs {
		purposes[r.Client] = append(purposes[r.Client], hooks.SubscriptionPurpose{Filter: r.Filter, Purpose: r.Purpose})
	}
	s.mu.Lock()
	s.purposes = purposes
	s.mu.Unlock()
	return v, err
}

// Purposes implements hooks.StateStore: the subscriptions of a client and
// the purposes they declared, in the order they were made, as read at
// start. They are not kept up to date: the enforcer asks for a session
// mochi restored at start only, until the client comes back (its own
// record has them from then on).
func (s *stateStore) Purposes(client string) []hooks.SubscriptionPurpose {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.purposes[client]
}

// StoredRetainedMessages implements mqtt.Hook. A retained command, which
// a broker before commands were never retained kept (hooks.RetainedCommand),
// is not handed to mochi, and is deleted: mochi would replay it at every
// subscription of its thing, on no right of its sender's. Here, not once
// the broker has started: the listeners serve before OnStarted, and every
// device reconnects at once after a restart.
func (s *stateStore) StoredRetainedMessages() ([]storage.Message, error) {
	v, err := s.messages(storage.RetainedKey + "_")
	var commands []string
	v = slices.DeleteFunc(v, func(m storage.Message) bool {
		if hooks.RetainedCommand(m.TopicName, true) {
			commands = append(commands, retainedKey(m.TopicName))
			return true
		}
		return false
	})
	if len(commands) > 0 {
		s.Log.Warn("retained commands deleted: commands are never retained", "count", len(commands))
	}
	s.forget(commands) // after the scan: see orphan
	return v, err
}

func (s *stateStore) messages(prefix string) (v []storage.Message, err error) {
	err = s.each(prefix, func(b []byte) error {
		var m storage.Message
		if err := m.UnmarshalBinary(b); err != nil {
			return err
		}
		v = append(v, m)
		return nil
	})
	return v, err
}

// StoredSysInfo implements mqtt.Hook.
func (s *stateStore) StoredSysInfo() (v storage.SystemInfo, err error) {
	err = s.db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(stateBucket).Get([]byte(storage.SysInfoKey)); b != nil {
			return v.UnmarshalBinary(b)
		}
		return nil
	})
	return v, err
}
