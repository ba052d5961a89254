package broker_test

import (
	"strings"
	"testing"
	"time"
)

// TestTimeLimitedCoOwnerGrantsWithinHisWindow: a co-owner whose relation
// has a window (a house-sitter for one night) gives nobody a say beyond
// it: an invitation without an end, or ending later, is refused; one
// within it is granted and ends with it. An invitation accepted after the
// inviter's own window was shortened below it is void.
func TestTimeLimitedCoOwnerGrantsWithinHisWindow(t *testing.T) {
	addr := veil.Addr("mqtt")
	id := handedOver(t, "RV-WN-0001")
	an := mustCfg(t, addr, "an", "an-pass")
	peter := mustCfg(t, addr, "peter", "peter-pass")
	stranger := mustCfg(t, addr, "stranger", "stranger-pass")
	ruth := mustCfg(t, addr, "ruth", "ruth-pass")
	rels := "$config/things/" + id + "/relations/"
	inv := an.mustOK(rels+"peter", `{"relation":"co_owner","valid_until":"2026-11-25T23:00:00Z"}`).Inv
	peter.mustOK("$config/invitations/peter/"+inv+"/answer", `{"accept":true}`)

	for _, doc := range []string{`{"relation":"co_owner"}`, `{"relation":"owner"}`, `{"relation":"co_owner","valid_until":"2026-11-26T08:00:00Z"}`} {
		r := peter.ask(rels+"stranger", doc)
		if r.OK || !strings.Contains(r.Error, "valid_until: must be no later than 2026-11-25T23:00:00Z") {
			t.Errorf("Peter inviting %s beyond his window: %+v", doc, r)
		}
	}
	inv = peter.mustOK(rels+"stranger", `{"relation":"co_owner","valid_until":"2026-11-25T22:00:00Z"}`).Inv
	stranger.mustOK("$config/invitations/stranger/"+inv+"/answer", `{"accept":true}`)
	pending := peter.mustOK(rels+"ruth", `{"relation":"visitor","valid_until":"2026-11-25T22:30:00Z"}`).Inv

	// An shortens Peter's window: Ruth's invitation now outlasts it.
	inv = an.mustOK(rels+"peter", `{"relation":"co_owner","valid_until":"2026-11-25T21:00:00Z"}`).Inv
	peter.mustOK("$config/invitations/peter/"+inv+"/answer", `{"accept":true}`)
	if r := ruth.ask("$config/invitations/ruth/"+pending+"/answer", `{"accept":true}`); r.OK || !strings.Contains(r.Error, "no longer valid") {
		t.Errorf("an invitation outlasting the inviter's shortened window was accepted: %+v", r)
	}

	clock.Set(time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)) // the next morning
	defer clock.Set(evening)
	cmd := "things/" + id + "/cmd/unlock"
	if code := peter.publish(cmd, `{}`); code != 0x87 {
		t.Fatalf("Peter after his window: 0x%02x, want 0x87", code)
	}
	if code := stranger.publish(cmd, `{}`); code != 0x87 {
		t.Errorf("the co-owner Peter made during his window still unlocks the next morning: 0x%02x", code)
	}
}

// TestWindowedOwnerIsNoOwnerOfRecord: a co-owner of a place with a window
// invites someone as owner of an ownerless thing in it, within the window.
// Accepting does not make the invitee the owner of record (which has no
// end): he is an owner by relation until his window ends, and the thing
// stays linked to the place.
func TestWindowedOwnerIsNoOwnerOfRecord(t *testing.T) {
	addr := veil.Addr("mqtt")
	addFactory(t, "RV-RW-0001", "factory-RV-RW-0001")
	enr, err := enrollDevice(t, addr, "", "RV-RW-0001", "factory-RV-RW-0001", `{"kind":"actuator"}`)
	if err != nil || !enr.OK {
		t.Fatalf("enrolment: %v %+v", err, enr)
	}
	id := enr.Thing
	admin := mustCfg(t, addr, "admin", "admin-pass")
	an := mustCfg(t, addr, "an", "an-pass")
	ruth := mustCfg(t, addr, "ruth", "ruth-pass")
	stranger := mustCfg(t, addr, "stranger", "stranger-pass")
	// The ownerless device is installed in An's flat.
	admin.mustOK("$config/things/"+id, `{"kind":"actuator","place":"home-an"}`)
	// Ruth house-sits tonight: co-owner of the flat until 23:00.
	inv := an.mustOK("$config/places/home-an/relations/ruth", `{"relation":"co_owner","valid_until":"2026-11-25T23:00:00Z"}`).Inv
	ruth.mustOK("$config/invitations/ruth/"+inv+"/answer", `{"accept":true}`)
	inv = ruth.mustOK("$config/things/"+id+"/relations/stranger", `{"relation":"owner","valid_until":"2026-11-25T22:00:00Z"}`).Inv
	stranger.mustOK("$config/invitations/stranger/"+inv+"/answer", `{"accept":true}`)
	if th, _ := veil.Engine.Thing(id); th.Owner != "" || th.Place != "home-an" {
		t.Fatalf("after a windowed owner accepted: owner of record %q, place %q; want none and home-an", th.Owner, th.Place)
	}
	if code := stranger.publish("things/"+id+"/cmd/unlock", `{}`); code != 0 {
		t.Fatalf("the owner within his window: 0x%02x", code)
	}
	clock.Set(time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)) // the next morning
	defer clock.Set(evening)
	if code := stranger.publish("things/"+id+"/cmd/unlock", `{}`); code != 0x87 {
		t.Errorf("next morning the owner made by a one-night co-owner still unlocks: 0x%02x", code)
	}
}
