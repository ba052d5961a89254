package hooks

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// NoSendQuota clears every client's Receive Maximum at CONNECT, with
// enforcement on or off alike.
//
// mochi v2.7.9 honours a client's Receive Maximum with a send quota, and
// while quota is left it calls Inflight.NextImmediate after every packet the
// client sends. That takes the in-flight map's read lock twice, and a
// publisher's Inflight.Set in between stops the client's read loop and every
// publisher delivering to it, for good (docs/design.md). mosquitto's v5
// clients send Receive Maximum 20 in every CONNECT. Without a quota mochi
// delivers as to a client that sets none: what is unacknowledged is bounded
// by mochi's MaximumInflight (8,192 by default; beyond it a QoS 1 or 2
// delivery is dropped and counted in mochi's Info.InflightDropped), not by what
// the client asked for.
type NoSendQuota struct{ mqtt.HookBase }

// ID names the hook.
func (*NoSendQuota) ID() string { return "veil-no-send-quota" }

// Provides lists the one event it handles.
func (*NoSendQuota) Provides(b byte) bool { return b == mqtt.OnConnect }

// OnConnect clears the quota mochi set from the CONNECT (ParseConnect runs
// before the hooks), and the Receive Maximum it would set it from again
// when the client takes over a session.
func (*NoSendQuota) OnConnect(cl *mqtt.Client, _ packets.Packet) error {
	cl.Properties.Props.ReceiveMaximum = 0
	cl.State.Inflight.ResetSendQuota(0)
	return nil
}
