package broker_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"go.etcd.io/bbolt"
)

// A retained command kept by a broker before commands were never retained
// (a visitor's unlock, replayed at every reconnect of the lock) is gone
// after a start: not among mochi's retained messages, not replayed to the
// lock when it subscribes, as it does first when it reconnects after the
// restart, and deleted from the state file. The lock's retained state
// stays.
func TestRetainedCommandsDeletedAtStart(t *testing.T) {
	dir := t.TempDir()
	clk := &testClock{}
	clk.Set(time.Now().UTC())
	const cmd, state = "things/lock-1/cmd/unlock", "things/lock-1/state"
	b := startWithClock(t, dir, clk)
	// As the broker before kept them: by mochi's inline client, which no
	// hook decides.
	for topic, payload := range map[string]string{cmd: `{"by":"ruth"}`, state: `{"locked":true}`} {
		if err := b.MQTT.Publish(topic, []byte(payload), true, 1); err != nil {
			t.Fatal(err)
		}
		if _, ok := b.MQTT.Topics.Retained.Get(topic); !ok {
			t.Fatalf("%s not retained before the restart", topic)
		}
	}
	b.Close()

	b = startWithClock(t, dir, clk)
	if pk, ok := b.MQTT.Topics.Retained.Get(cmd); ok {
		t.Errorf("retained after the start on %s: %s", cmd, pk.Payload)
	}
	lock, err := dialCfg(t, b.Addr("mqtt"), "", "lock-1", "lock-1-secret", "lock-1")
	if err != nil {
		t.Fatal(err)
	}
	if codes := lock.subscribe("things/lock-1/#"); codes[0] > 2 {
		t.Fatalf("lock's subscription: 0x%02x", codes[0])
	}
	got := lock.collect(500 * time.Millisecond)
	if len(got) != 1 || got[state] != `{"locked":true}` {
		t.Errorf("lock got %v on its subscription after the restart, want its retained state alone", got)
	}
	b.Close()

	db, err := bbolt.Open(filepath.Join(dir, "mqtt.db"), 0o600, &bbolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bbolt.Tx) error {
		bucket := tx.Bucket([]byte("mochi"))
		if bucket == nil {
			t.Fatal("no state bucket")
		}
		for key, want := range map[string]bool{storage.RetainedKey + "_" + cmd: false, storage.RetainedKey + "_" + state: true} {
			if got := bucket.Get([]byte(key)) != nil; got != want {
				t.Errorf("%s in the state file: %v, want %v", key, got, want)
			}
		}
		return nil
	})
}
