package broker_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"go.etcd.io/bbolt"
)

// The state file as a crash leaves it for a client connected with a session
// that ends with its connection (v5 expiry 0): its client record and its
// subscription. mochi drops the client at start, before it loads the
// subscriptions; the store does not hand it the subscription (mochi would
// index it under a client id it no longer holds, for a later session under
// that id that never subscribed) and deletes it.
func TestCrashedCleanSessionsSubscriptionNotRestored(t *testing.T) {
	dir := t.TempDir()
	const topic = "things/thermo-1/data/temperature"
	db, err := bbolt.Open(filepath.Join(dir, "mqtt.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	cl := storage.Client{ID: "doc-x", T: storage.ClientKey, Username: []byte("doctor"), ProtocolVersion: 5, Listener: "t"}
	sub := storage.Subscription{ID: "SUB_doc-x:" + topic, T: storage.SubscriptionKey, Client: "doc-x", Filter: topic, Qos: 1}
	cb, _ := cl.MarshalBinary()
	sb, _ := sub.MarshalBinary()
	if err := db.Update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("mochi"))
		if err != nil {
			return err
		}
		if err := b.Put([]byte("CL_doc-x"), cb); err != nil {
			return err
		}
		return b.Put([]byte(sub.ID), sb)
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()

	clk := &testClock{}
	clk.Set(time.Now().UTC())
	b := startWithClock(t, dir, clk)
	if _, ok := b.MQTT.Clients.Get("doc-x"); ok {
		t.Fatal("mochi kept the clean session")
	}
	doc, err := dialCfg(t, b.Addr("mqtt"), "", "doctor", "doctor-pass", "doc-x") // clean start, no subscription
	if err != nil {
		t.Fatal(err)
	}
	thermo, err := dialCfg(t, b.Addr("mqtt"), "", "thermo-1", "thermo-1-secret", "thermo-1")
	if err != nil {
		t.Fatal(err)
	}
	if code := thermo.publish(topic, `{"temperature":21.37}`); code != 0 {
		t.Fatalf("publish: 0x%02x", code)
	}
	got := doc.collect(700 * time.Millisecond)
	b.Close()
	var still bool
	db, err = bbolt.Open(filepath.Join(dir, "mqtt.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = db.View(func(tx *bbolt.Tx) error { still = tx.Bucket([]byte("mochi")).Get([]byte(sub.ID)) != nil; return nil })
	db.Close()
	if len(got) != 0 || still {
		t.Errorf("a new session under doc-x that never subscribed got %v; the dead subscription still in the file: %v", got, still)
	}
}
