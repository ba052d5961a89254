package hooks

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// NoSendQuota clears every client's Receive Maximum at CONNECT, with
// enforcement on or off alike, so that mochi never holds deliveries back
// with a send quota.
//
// Upstream mochi v2.7.9's send quota deadlocked (Inflight.NextImmediate took
// the in-flight map's read lock twice), leaked quota and reordered; the copy's
// patch 0003 rebuilds it (third_party/mochi). Veil removed this hook for most
// of 2026-11-27 and put it back when TestResendSkipsPayloadsTheViewNowWithholds
// lost a message; the loss turned out to be a takeover race of upstream mochi
// that never involved a quota (patch 0013 fixes it). Dropping this hook again
// waits for a test of a takeover under a real Receive Maximum (docs/design.md).
// Without a quota mochi delivers as to a client that sets none: what is
// unacknowledged is bounded by mochi's MaximumInflight (8,192 by default;
// beyond it a QoS 1 or 2 delivery is dropped and counted in mochi's
// Info.InflightDropped), not by what the client asked for.
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
