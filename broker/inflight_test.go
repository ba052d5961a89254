package broker

import (
	"path/filepath"
	"reflect"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/veil-iot/veil/hooks"
	"github.com/veil-iot/veil/policies"
)

var coarseView = hooks.StoredView{Owner: "an", Constraints: []policies.Constraint{{Kind: "accuracy", Field: "temperature", Step: 1}}}

// restart stops s and opens its file again, as the broker's next start.
func restart(t *testing.T, s *stateStore, path string) *stateStore {
	t.Helper()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	s = openState(t, path, time.Hour)
	t.Cleanup(func() { _ = s.Stop() })
	if _, err := s.StoredInflightMessages(); err != nil {
		t.Fatal(err)
	}
	return s
}

// The enforcer keeps a view while a commit writes the delivery's record
// (taken from the pending changes, not in the file yet): the view is kept
// all the same (a review found it lost, and the message then decided after
// a restart under the live data of that day).
func TestKeepViewWhileTheRecordIsBeingCommitted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mqtt.db")
	s := openState(t, path, time.Hour)
	cl := stateClient("doctor-1")
	pk := qosPacket(1, "things/thermo-1/data/temperature")
	s.OnQosPublish(cl, pk, pk.Created, 0)
	s.commitMu.Lock() // a commit, up to its write
	batch := s.takePending()
	s.KeepView(cl.ID, pk, coarseView) // the enforcer, meanwhile
	err := s.write(batch)
	s.committed(batch, err)
	s.commitMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	s = restart(t, s, path)
	if r, ok := s.Restored(cl.ID, 1); !ok || r.View == nil || !reflect.DeepEqual(*r.View, coarseView) {
		t.Errorf("restored %+v (%v), want the view kept", r, ok)
	}
}

// A view kept from the file's record after the message was acknowledged,
// its deletion being committed, does not bring the record back.
func TestKeepViewDoesNotResurrectAnAcknowledgedRecord(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mqtt.db")
	s := openState(t, path, time.Hour)
	cl := stateClient("doctor-1")
	pk := qosPacket(1, "things/thermo-1/data/temperature")
	s.OnQosPublish(cl, pk, pk.Created, 0)
	if err := s.commit(); err != nil {
		t.Fatal(err)
	}
	key := inflightKey(cl.ID, 1)
	if _, done := s.withView(key, nil, pk.Payload, coarseView); done {
		t.Fatal("a committed record was not read from the file")
	}
	s.commitMu.Lock()
	fromFile, _ := s.inflight(key) // KeepView read the file...
	s.commitMu.Unlock()
	s.OnQosComplete(cl, pk)  // ...the message is acknowledged...
	s.commitMu.Lock()        // ...a commit takes the delete...
	batch := s.takePending() //
	if kept, _ := s.withView(key, fromFile, pk.Payload, coarseView); kept != nil {
		t.Error("the view brought the acknowledged record back")
	}
	err := s.write(batch)
	s.committed(batch, err)
	s.commitMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if kept, _ := s.withView(key, fromFile, pk.Payload, coarseView); kept != nil {
		t.Error("the view brought the acknowledged record back after its deletion was written")
	}
	s = restart(t, s, path)
	if r, ok := s.Restored(cl.ID, 1); ok {
		t.Errorf("acknowledged message restored: %+v", r)
	}
}

// A late delivery to a connection a resumed session replaced (the enforcer
// ignores it too) is not stored: it would take the record of the session's
// own message with that packet id, and no drop would ever remove it.
func TestLateDeliveryToATakenOverClientNotStored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mqtt.db")
	s := openState(t, path, time.Hour)
	const topic = "things/thermo-1/data/temperature"
	old, cur := stateClient("doctor-1"), stateClient("doctor-1")
	setTakenOver(old)
	mine := qosPacket(6, topic)
	s.OnQosPublish(cur, mine, mine.Created, 0)
	late := qosPacket(6, topic) // the old client's packet ids go on too
	late.Payload = []byte(`{"temperature":99.99}`)
	s.OnQosPublish(old, late, late.Created, 0)
	s.OnQosDropped(old, late) // as mochi drops it from the old client: ignored
	s = restart(t, s, path)
	msgs, err := s.StoredInflightMessages()
	if err != nil || len(msgs) != 1 || string(msgs[0].Payload) != string(mine.Payload) {
		t.Errorf("restored %+v (%v), want the session's own message 6 only", msgs, err)
	}
}

// setTakenOver marks cl as mochi does when another connection resumes its
// session (the flag is mochi's own).
func setTakenOver(cl *mqtt.Client) {
	f := reflect.ValueOf(&cl.State).Elem().FieldByName("isTakenOver")
	(*atomic.Bool)(unsafe.Pointer(f.UnsafeAddr())).Store(true)
}
