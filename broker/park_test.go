package broker_test

import (
	"testing"
)

// TestParkedStrangerGetsGrantOnNextMessage: the stranger's wildcard
// subscription is parked (nothing names the stranger), an's policy over
// the control plane applies from the next message, and its deletion too.
func TestParkedStrangerGetsGrantOnNextMessage(t *testing.T) {
	addr := veil.Addr("mqtt")
	stranger := connect(t, "stranger", "stranger-pass", connOpts{})
	stranger.mustSubscribe("", "things/+/data/#")
	thermo := connect(t, "thermo-1", "thermo-1-secret", connOpts{clientID: "thermo-1"})
	thermo.publish("things/thermo-1/data/temperature", `{"temperature":20.01}`, false)
	stranger.nothing(quiet)

	an := mustCfg(t, addr, "an", "an-pass")
	topic := "$config/users/an/policies/stranger-thermo"
	an.mustOK(topic, `{"id":"stranger-thermo","priority":50,"effect":"allow","subjects":["user:stranger"],
		"resources":["things/thermo-1/data/temperature"],"actions":["read"]}`)
	defer an.ask(topic, "") // the household is shared by the package's tests
	thermo.publish("things/thermo-1/data/temperature", `{"temperature":20.02}`, false)
	if m := stranger.next(); m.payload != `{"temperature":20.02}` {
		t.Fatalf("stranger got %s after the grant", m.payload)
	}

	if r := an.ask(topic, ""); !r.OK {
		t.Fatalf("deleting the policy: %+v", r)
	}
	thermo.publish("things/thermo-1/data/temperature", `{"temperature":20.03}`, false)
	stranger.nothing(quiet)
}
