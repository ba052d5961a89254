package hooks

import (
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/veil-iot/veil/policies"
)

// A message queued at 22:00 under the coarse view, which was kept in memory
// before a restart, is written under it after the restart even when
// today's decision does not end at a time: the doctor became co-owner at
// 08:00, with no end.
func TestRestoredMessageDecidedAsOfItsTimeWhateverNow(t *testing.T) {
	f, clock := nightAndDay(t)
	h := f.enforcer
	if err := f.engine.PutRelationship(policies.Relationship{Thing: "sensor-1", User: "doctor", Relation: policies.RelCoOwner,
		Status: policies.StatusActive, ValidFrom: time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	night := time.Date(2026, 11, 26, 22, 0, 0, 0, time.UTC)
	if d := f.engine.DecideAt(policies.Request{Principal: policies.UserPrincipal("doctor"), Topic: memoTopic, Action: policies.ActRead}, night); d.View == nil || d.Expires.IsZero() {
		t.Fatalf("at night: view %v expires %v; want a timed coarse view", d.View, d.Expires)
	}
	restored := f.server.NewClient(nil, "t", "doctor-0", false)
	restored.Properties.Username = []byte("doctor")
	pk := queuedPk(memoTopic, 1, false)
	pk.Created = night.Unix()
	restored.State.Inflight.Set(pk)
	f.server.Clients.Add(restored)
	clock.Set(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	h.OnSessionEstablish(doctor, packets.Packet{Connect: packets.ConnectParams{Clean: false}})
	if out := h.OnPacketEncode(doctor, queuedPk(memoTopic, 1, true)); string(out.Payload) != `{"temperature":21}` {
		t.Errorf("queued at 22:00 (coarse), resent after the restart as %s", out.Payload)
	}
}

// A clean start to a restored session keeps no view for the messages mochi
// discards (ClearInflights on a taken-over client calls OnQosDropped, which
// skips it): the new session's first delivery reuses packet id 1, and must
// not be written under the night's view of the discarded message.
func TestCleanStartToARestoredSessionKeepsNoViews(t *testing.T) {
	f, clock := nightAndDay(t)
	h := f.enforcer
	night := time.Date(2026, 11, 26, 22, 0, 0, 0, time.UTC)
	restored := f.server.NewClient(nil, "t", "doctor-0", false)
	restored.Properties.Username = []byte("doctor")
	pk := queuedPk(memoTopic, 1, false)
	pk.Created = night.Unix()
	restored.State.Inflight.Set(pk)
	f.server.Clients.Add(restored)
	clock.Set(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC))
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	h.OnSessionEstablish(doctor, packets.Packet{Connect: packets.ConnectParams{Clean: true}})
	restored.State.Inflight.Delete(1) // mochi: isTakenOver, ClearInflights (OnQosDropped skipped)
	if n := h.queued.n.Load(); n != 0 {
		t.Errorf("%d views kept after a clean start", n)
	}
	// A fresh delivery in the morning, packet id 1 of the new session.
	if !h.OnACLCheck(doctor, memoTopic, false) {
		t.Fatal("denied")
	}
	fresh := queuedPk(memoTopic, 1, false)
	doctor.State.Inflight.Set(fresh)
	if h.Provides(mqtt.OnQosPublish) {
		h.OnQosPublish(doctor, fresh, 0, 0)
	}
	if out := h.OnPacketEncode(doctor, fresh); string(out.Payload) != `{"temperature":21.37}` {
		t.Errorf("a morning delivery written as %s (the discarded night message's view)", out.Payload)
	}
}
