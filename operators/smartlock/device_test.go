package smartlock

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/veil-iot/veil/operators/agent"
)

func TestParseCommand(t *testing.T) {
	now := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		payload string
		want    Command
		wantErr bool
	}{
		{"empty", "", Command{}, false},
		{"empty object", "{}", Command{}, false},
		{"by", `{"by":"ruth"}`, Command{By: "ruth"}, false},
		{"by and RFC 3339 ts", `{"by":"ruth","ts":"2026-11-25T19:59:58Z"}`, Command{By: "ruth", TS: now.Add(-2 * time.Second)}, false},
		{"epoch ms ts", `{"ts":1795636799000}`, Command{TS: time.UnixMilli(1795636799000)}, false},
		{"stale ts", `{"by":"ruth","ts":"2026-11-25T18:00:00Z"}`, Command{}, true},
		{"ts from the future", `{"ts":"2026-11-25T21:00:00Z"}`, Command{}, true},
		{"not JSON", `unlock please`, Command{}, true},
		{"JSON array", `["unlock"]`, Command{}, true},
		{"JSON string", `"unlock"`, Command{}, true},
		{"unknown field", `{"by":"ruth","force":true}`, Command{}, true},
		{"by not a string", `{"by":42}`, Command{}, true},
		{"by empty", `{"by":""}`, Command{}, true},
		{"by with newline", `{"by":"ruth\nlocked"}`, Command{}, true},
		{"trailing data", `{"by":"ruth"} {"by":"eve"}`, Command{}, true},
		// Not an object: json.Decoder takes null for an empty object, and
		// its More() is false before a stray closing bracket.
		{"null", `null`, Command{}, true},
		{"null with spaces", " null\n", Command{}, true},
		{"JSON true", `true`, Command{}, true},
		{"JSON number", `1`, Command{}, true},
		{"trailing brace", `{"by":"x"}}`, Command{}, true},
		{"trailing bracket", `{"by":"x"}]`, Command{}, true},
		{"trailing garbage", `{"by":"x"}unlock`, Command{}, true},
		{"trailing whitespace", "{\"by\":\"x\"} \r\n", Command{By: "x"}, false},
		{"whitespace only", " \n", Command{}, false},
		{"bad ts", `{"ts":"yesterday"}`, Command{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCommand([]byte(tt.payload), now, time.Minute)
			if tt.wantErr {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil || got.By != tt.want.By || !got.TS.Equal(tt.want.TS) {
				t.Fatalf("ParseCommand = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestCommandAction(t *testing.T) {
	tests := []struct {
		topic, thing string
		want         string
		wantErr      bool
	}{
		{"things/lock-1/cmd/unlock", "lock-1", "unlock", false},
		{"things/lock-1/cmd/lock", "lock-1", "lock", false},
		{"things/lock-2/cmd/unlock", "lock-1", "", true},  // another lock's command
		{"things/lock-10/cmd/unlock", "lock-1", "", true}, // prefix, not the same id
		{"things/lock-1/cmd/open", "lock-1", "", true},
		{"things/lock-1/cmd/unlock/now", "lock-1", "", true},
		{"things/lock-1/state", "lock-1", "", true},
		{"things//cmd/unlock", "", "", true},
	}
	for _, tt := range tests {
		got, err := agent.CommandAction(tt.topic, tt.thing, Actions)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("CommandAction(%q, %q) = %q, %v", tt.topic, tt.thing, got, err)
		}
	}
}

// fakeOut records states.
type fakeOut struct {
	mu     sync.Mutex
	states []State
}

func (o *fakeOut) Data(string, any) {}
func (o *fakeOut) Thing() string    { return "lock-1" }
func (o *fakeOut) State(v any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.states = append(o.states, v.(State))
}
func (o *fakeOut) last() (State, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.states[len(o.states)-1], len(o.states)
}

// startDevice runs a device on a simulated relay and door with a manual
// clock and waits until it takes commands and watches the door.
func startDevice(t *testing.T) (d *Device, relay *SimRelay, door *SimDoor, out *fakeOut, cancel context.CancelFunc, done chan error) {
	t.Helper()
	clock := &manualClock{now: time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)}
	relay, door = &SimRelay{}, &SimDoor{}
	d = &Device{Relay: relay, Door: door, Clock: clock, RelockAfter: 5 * time.Second}
	out = &fakeOut{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done = make(chan error, 1)
	go func() { done <- d.Run(ctx, out) }()
	deadline := time.Now().Add(2 * time.Second)
	for d.lock.Load() == nil || func() bool { door.mu.Lock(); defer door.mu.Unlock(); return door.watcher == nil }() {
		if time.Now().After(deadline) {
			t.Fatal("device did not start")
		}
		time.Sleep(time.Millisecond)
	}
	return d, relay, door, out, cancel, done
}

// TestDeviceRefusesNonObjectCommands: a payload that is not a JSON object
// never moves the lock (null decoded as an empty command unlocked it).
func TestDeviceRefusesNonObjectCommands(t *testing.T) {
	d, relay, _, out, _, _ := startDevice(t)
	_, n := out.last()
	for _, bad := range []string{`null`, `{"by":"x"}}`, `{"by":"x"}]`} {
		if err := d.Command("unlock", []byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("unlock %s: %v, want ErrMalformed", bad, err)
		}
	}
	if st, n2 := out.last(); n2 != n || !st.Locked || relay.Unlocked() {
		t.Fatalf("a malformed unlock moved the lock: %+v, relay unlocked=%v", st, relay.Unlocked())
	}
}

func TestDeviceCommands(t *testing.T) {
	d, relay, door, out, cancel, done := startDevice(t)
	if err := d.Command("unlock", []byte(`{"by":"ruth","ts":"2026-11-25T20:00:00Z"}`)); err != nil {
		t.Fatal(err)
	}
	if st, _ := out.last(); st.Locked || st.By != "ruth" || st.Door != DoorClosed || !relay.Unlocked() {
		t.Fatalf("after unlock: %+v", st)
	}
	_, n := out.last()
	for _, bad := range [][]byte{[]byte(`{"by":"eve","ts":"2026-11-25T10:00:00Z"}`), []byte(`lock it`), []byte(`{"cmd":"lock"}`)} {
		if err := d.Command("lock", bad); err == nil {
			t.Fatalf("malformed command %s accepted", bad)
		}
	}
	if _, n2 := out.last(); n2 != n || !relay.Unlocked() {
		t.Fatal("a rejected command moved the lock")
	}
	door.Set(true)
	door.Set(false)
	if st, _ := out.last(); !st.Locked || st.By != ByAuto {
		t.Fatalf("after a walk-through: %+v", st)
	}
	if err := d.Command("unlock", nil); err != nil {
		t.Fatal(err)
	}
	if st, _ := out.last(); st.Locked || st.By != "remote" {
		t.Fatalf("unlock without by: %+v", st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st, _ := out.last(); !st.Locked || st.By != ByStop || relay.Unlocked() {
		t.Fatalf("stopping left the lock %+v, relay unlocked=%v", st, relay.Unlocked())
	}
}
