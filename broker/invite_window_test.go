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

// TestHandOverStartsNowWithoutEnd: an owner invitation for a thing without
// an owner of record hands it over, and its owner of record has no end: an
// invitation with a window (a one-night co-owner of the place making an
// accomplice the owner for good) or starting later (nobody would operate
// the thing meanwhile, and it would never get its owner of record) is
// refused, naming the fields.
func TestHandOverStartsNowWithoutEnd(t *testing.T) {
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
	patrick := mustCfg(t, addr, "patrick", "patrick-pass")
	// The ownerless device is installed in An's flat, and claimed.
	admin.mustOK("$config/things/"+id, `{"kind":"actuator","place":"home-an"}`)
	patrick.mustOK("$config/things/"+id+"/claim", `{"code":"`+enr.ClaimCode+`"}`)
	// Ruth house-sits tonight: co-owner of the flat until 23:00.
	inv := an.mustOK("$config/places/home-an/relations/ruth", `{"relation":"co_owner","valid_until":"2026-11-25T23:00:00Z"}`).Inv
	ruth.mustOK("$config/invitations/ruth/"+inv+"/answer", `{"accept":true}`)
	const want = "valid_from, valid_until: the thing has no owner yet; handing it over starts now and has no end"
	for _, c := range []struct {
		who *cfgClient
		doc string
	}{
		{ruth, `{"relation":"owner","valid_until":"2026-11-25T22:00:00Z"}`},
		{patrick, `{"relation":"owner","valid_from":"2026-11-26T08:00:00Z"}`},
	} {
		if r := c.who.ask("$config/things/"+id+"/relations/stranger", c.doc); r.OK || !strings.Contains(r.Error, want) {
			t.Errorf("%s inviting %s: %+v", c.who.id, c.doc, r)
		}
	}
	// The hand-over as it should be.
	inv = patrick.mustOK("$config/things/"+id+"/relations/an", `{"relation":"owner"}`).Inv
	an.mustOK("$config/invitations/an/"+inv+"/answer", `{"accept":true}`)
	if th, _ := veil.Engine.Thing(id); th.Owner != "an" {
		t.Fatalf("owner of record after the hand-over: %q", th.Owner)
	}
}
