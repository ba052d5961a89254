package hooks_test

import (
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/veil-iot/veil/hooks"
)

func TestEventSet(t *testing.T) {
	set := hooks.Events(mqtt.OnConnect, mqtt.OnPacketEncode, mqtt.StoredSysInfo)
	for _, tc := range []struct {
		event byte
		want  bool
	}{
		{mqtt.OnConnect, true},
		{mqtt.OnPacketEncode, true},
		{mqtt.StoredSysInfo, true},
		{mqtt.OnPublish, false},
		{mqtt.OnACLCheck, false},
		{64, false},
		{255, false},
	} {
		if got := set.Has(tc.event); got != tc.want {
			t.Errorf("Has(%d) = %v, want %v", tc.event, got, tc.want)
		}
	}
	if hooks.Events().Has(mqtt.OnConnect) {
		t.Error("the empty set has OnConnect")
	}
}

// TestEnforcerProvides checks the enforcer still asks for the events its
// enforcement depends on: a missing one would silently skip a check.
func TestEnforcerProvides(t *testing.T) {
	e := hooks.NewEnforcer(hooks.EnforcerConfig{})
	for _, ev := range []byte{mqtt.OnConnect, mqtt.OnACLCheck, mqtt.OnSubscribe, mqtt.OnPublish, mqtt.OnPacketEncode,
		mqtt.OnSessionEstablish, mqtt.OnWill, mqtt.OnSelectSubscribers} {
		if !e.Provides(ev) {
			t.Errorf("the enforcer does not provide event %d", ev)
		}
	}
	if e.Provides(mqtt.OnConnectAuthenticate) {
		t.Error("the enforcer provides OnConnectAuthenticate, which the authenticator owns")
	}
}
