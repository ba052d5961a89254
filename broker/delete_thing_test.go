package broker_test

import (
	"context"
	"testing"
	"time"
)

// TestDeletedThingTakesItsInvitationsAndSerial: deleting a thing closes
// its pending invitations (revoked, no longer retained) and retires its
// serial, which does not enrol again (docs/control-plane.md): else the
// serial re-created the thing under the same id, and an invitation made
// for the deleted one granted on it.
func TestDeletedThingTakesItsInvitationsAndSerial(t *testing.T) {
	addr := veil.Addr("mqtt")
	id := handedOver(t, "RV-DL-0001")
	an := mustCfg(t, addr, "an", "an-pass")
	inv := an.mustOK("$config/things/"+id+"/relations/ruth", `{"relation":"co_owner"}`).Inv
	an.mustOK("$config/things/"+id, ``) // delete the thing

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if got, found, err := veil.Store.Invitation(ctx, inv); err != nil || !found || got.Status != "revoked" {
		t.Errorf("invitation of the deleted thing: found=%v status=%q err=%v, want revoked", found, got.Status, err)
	}
	if _, ok := veil.MQTT.Topics.Retained.Get("$config/invitations/ruth/" + inv); ok {
		t.Errorf("the invitation to the deleted thing is still retained")
	}

	r, err := enrollDevice(t, addr, "", "RV-DL-0001", "factory-RV-DL-0001", `{"kind":"actuator"}`)
	if err != nil {
		t.Fatal(err)
	}
	if r.OK {
		t.Errorf("the serial of a deleted thing enrolled again (new thing %q, fresh claim code)", r.Thing)
		// The same owner takes the re-created thing back: the invitation
		// An made for the deleted thing now grants on the new one.
		patrick := mustCfg(t, addr, "patrick", "patrick-pass")
		patrick.mustOK("$config/things/"+r.Thing+"/claim", `{"code":"`+r.ClaimCode+`"}`)
		hand := patrick.mustOK("$config/things/"+r.Thing+"/relations/an", `{"relation":"owner"}`).Inv
		an.mustOK("$config/invitations/an/"+hand+"/answer", `{"accept":true}`)
		ruth := mustCfg(t, addr, "ruth", "ruth-pass")
		if a := ruth.ask("$config/invitations/ruth/"+inv+"/answer", `{"accept":true}`); a.OK {
			t.Errorf("an invitation made for the deleted thing made Ruth co-owner of the re-created one")
		}
	}
}

// TestDeletedThingTakesItsClaimCode: a thing deleted before anyone claimed
// it (an admin's clean-up) takes its claim code with it.
func TestDeletedThingTakesItsClaimCode(t *testing.T) {
	addr := veil.Addr("mqtt")
	addFactory(t, "RV-DL-0002", "factory-RV-DL-0002")
	enr, err := enrollDevice(t, addr, "", "RV-DL-0002", "factory-RV-DL-0002", `{"kind":"sensor"}`)
	if err != nil || !enr.OK {
		t.Fatalf("enrolment: %v %+v", err, enr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if h, err := veil.Store.ClaimHash(ctx, enr.Thing); err != nil || h == "" {
		t.Fatalf("no claim code after the enrolment: %q, %v", h, err)
	}
	mustCfg(t, addr, "admin", "admin-pass").mustOK("$config/things/"+enr.Thing, ``)
	if h, err := veil.Store.ClaimHash(ctx, enr.Thing); err != nil || h != "" {
		t.Errorf("the deleted thing's claim code is still stored (%v)", err)
	}
}

// TestSerialNamingAUserDoesNotEnrol: a serial whose thing id is a user's
// name does not enrol: things are looked up first at CONNECT, so the user
// could no longer log in.
func TestSerialNamingAUserDoesNotEnrol(t *testing.T) {
	addr := veil.Addr("mqtt")
	addFactory(t, "PETER", "factory-PETER")
	r, err := enrollDevice(t, addr, "", "PETER", "factory-PETER", `{"kind":"sensor"}`)
	if err != nil {
		t.Fatal(err)
	}
	if r.OK || r.Error != "the thing id is a user's name" {
		t.Fatalf("a serial naming the user peter: %+v", r)
	}
	if _, ok := veil.Engine.Thing("peter"); ok {
		t.Fatal("a thing named peter exists")
	}
	mustCfg(t, addr, "peter", "peter-pass") // Peter still logs in
}
