package broker_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/veil-iot/veil/policies"
)

// handedOver enrols serial, has Patrick claim it and hand it over to An;
// it returns the thing id.
func handedOver(t *testing.T, serial string) string {
	t.Helper()
	addr := veil.Addr("mqtt")
	addFactory(t, serial, "factory-"+serial)
	enr, err := enrollDevice(t, addr, "", serial, "factory-"+serial, `{"kind":"actuator"}`)
	if err != nil || !enr.OK {
		t.Fatalf("enrolment: %v %+v", err, enr)
	}
	patrick := mustCfg(t, addr, "patrick", "patrick-pass")
	an := mustCfg(t, addr, "an", "an-pass")
	patrick.mustOK("$config/things/"+enr.Thing+"/claim", `{"code":"`+enr.ClaimCode+`"}`)
	inv := patrick.mustOK("$config/things/"+enr.Thing+"/relations/an", `{"relation":"owner"}`).Inv
	an.mustOK("$config/invitations/an/"+inv+"/answer", `{"accept":true}`)
	return enr.Thing
}

// TestOnlyTheOwnerLinksAThingToAPlace: relations on a place hold for the
// things in it, so a co-owner who could link the owner's thing into a
// place he co-owns would keep every right (command, configure, invite)
// after the owner revoked him on the thing. Only the owner links or
// unlinks; the owner may link it into a place she may configure.
func TestOnlyTheOwnerLinksAThingToAPlace(t *testing.T) {
	addr := veil.Addr("mqtt")
	id := handedOver(t, "RV-PL-0001")
	an := mustCfg(t, addr, "an", "an-pass")
	peter := mustCfg(t, addr, "peter", "peter-pass")
	inv := an.mustOK("$config/things/"+id+"/relations/peter", `{"relation":"co_owner"}`).Inv
	peter.mustOK("$config/invitations/peter/"+inv+"/answer", `{"accept":true}`)

	// Peter co-owns home-an (the bootstrap): he may not link the thing to it.
	r := peter.ask("$config/things/"+id, `{"kind":"actuator","place":"home-an"}`)
	if r.OK || !strings.Contains(r.Error, "place: only the thing's owner of record may change it") {
		t.Fatalf("a co-owner linking the thing to his place: %+v", r)
	}
	if th, _ := veil.Engine.Thing(id); th.Place != "" {
		t.Fatalf("the refused link was applied: place %q", th.Place)
	}
	// An revokes Peter on the thing: nothing is left to him.
	an.mustOK("$config/things/"+id+"/relations/peter", ``)
	if code := peter.publish("things/"+id+"/cmd/unlock", `{}`); code != 0x87 {
		t.Errorf("revoked co-owner's unlock: 0x%02x, want 0x87", code)
	}
	if r := peter.ask("$config/things/"+id+"/relations/stranger", `{"relation":"co_owner"}`); r.OK {
		t.Errorf("revoked co-owner still invites a co-owner of the thing: %+v", r)
	}
	// The owner links it to her home, and unlinks it again.
	an.mustOK("$config/things/"+id, `{"kind":"actuator","place":"home-an"}`)
	if th, _ := veil.Engine.Thing(id); th.Place != "home-an" {
		t.Fatalf("the owner's link: place %q", th.Place)
	}
	an.mustOK("$config/things/"+id, `{"kind":"actuator"}`)
	if th, _ := veil.Engine.Thing(id); th.Place != "" {
		t.Fatalf("the owner's unlink: place %q", th.Place)
	}
}

// TestOwnerByRelationDoesNotLinkAThing: an owner for one night (by
// relation, not of record) may not link the thing into a place of his own,
// where he would keep every right after his window and a revocation.
func TestOwnerByRelationDoesNotLinkAThing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	flat := policies.Place{ID: "rv-stranger-flat", Owner: "stranger"}
	rel := policies.Relationship{Place: flat.ID, User: "stranger", Relation: policies.RelOwner, Status: policies.StatusActive}
	must(t, veil.Store.PutPlace(ctx, flat))
	must(t, veil.Store.PutRelationship(ctx, rel))
	must(t, veil.Engine.PutPlace(flat))
	must(t, veil.Engine.PutRelationship(rel))

	addr := veil.Addr("mqtt")
	id := handedOver(t, "RV-OW-0001") // An's, owner of record
	an := mustCfg(t, addr, "an", "an-pass")
	stranger := mustCfg(t, addr, "stranger", "stranger-pass")
	inv := an.mustOK("$config/things/"+id+"/relations/stranger", `{"relation":"owner","valid_until":"2026-11-25T23:00:00Z"}`).Inv
	stranger.mustOK("$config/invitations/stranger/"+inv+"/answer", `{"accept":true}`)
	if r := stranger.ask("$config/things/"+id, `{"kind":"actuator","place":"rv-stranger-flat"}`); r.OK ||
		!strings.Contains(r.Error, "place: only the thing's owner of record may change it") {
		t.Fatalf("a one-night owner linking the thing into his place: %+v", r)
	}
	an.mustOK("$config/things/"+id+"/relations/stranger", ``) // An revokes him
	clock.Set(time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC))  // and it is the next morning
	defer clock.Set(evening)
	if code := stranger.publish("things/"+id+"/cmd/unlock", `{}`); code != 0x87 {
		t.Errorf("revoked one-night owner still unlocks the next morning: 0x%02x", code)
	}
}

// TestHandOverUnlinksTheInstallersPlace: an installer may not link the
// thing to a place of his own; a link made before the hand-over anyway (by
// an admin, or an older Veil) to a place the new owner has no standing in
// is dropped by the hand-over, so that the installer does not stay an owner
// of the thing through his place.
func TestHandOverUnlinksTheInstallersPlace(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The installer company's depot, as a bootstrap file would define it.
	depot := policies.Place{ID: "patrick-depot", Owner: "patrick"}
	rel := policies.Relationship{Place: "patrick-depot", User: "patrick", Relation: policies.RelOwner, Status: policies.StatusActive}
	must(t, veil.Store.PutPlace(ctx, depot))
	must(t, veil.Store.PutRelationship(ctx, rel))
	must(t, veil.Engine.PutPlace(depot))
	must(t, veil.Engine.PutRelationship(rel))

	addr := veil.Addr("mqtt")
	addFactory(t, "RV-PL-0002", "factory-RV-PL-0002")
	enr, err := enrollDevice(t, addr, "", "RV-PL-0002", "factory-RV-PL-0002", `{"kind":"actuator"}`)
	if err != nil || !enr.OK {
		t.Fatalf("enrolment: %v %+v", err, enr)
	}
	patrick := mustCfg(t, addr, "patrick", "patrick-pass")
	an := mustCfg(t, addr, "an", "an-pass")
	patrick.mustOK("$config/things/"+enr.Thing+"/claim", `{"code":"`+enr.ClaimCode+`"}`)
	if r := patrick.ask("$config/things/"+enr.Thing, `{"kind":"actuator","place":"patrick-depot"}`); r.OK {
		t.Fatal("the installer linked the thing to his depot")
	}
	// Linked anyway, as an admin could.
	th, _ := veil.Engine.Thing(enr.Thing)
	th.Place = "patrick-depot"
	must(t, veil.Store.PutThing(ctx, th, ""))
	must(t, veil.Engine.PutThing(th))

	inv := patrick.mustOK("$config/things/"+enr.Thing+"/relations/an", `{"relation":"owner"}`).Inv
	an.mustOK("$config/invitations/an/"+inv+"/answer", `{"accept":true}`)

	th, _ = veil.Engine.Thing(enr.Thing)
	if th.Owner != "an" || th.Place != "" {
		t.Fatalf("after the hand-over: owner %q, place %q; want an and none", th.Owner, th.Place)
	}
	if stored, _, err := veil.Store.Load(ctx); err != nil {
		t.Fatal(err)
	} else {
		for _, x := range stored.Things {
			if x.ID == enr.Thing && x.Place != "" {
				t.Fatalf("the stored thing keeps place %q", x.Place)
			}
		}
	}
	if code := patrick.publish("things/"+enr.Thing+"/cmd/unlock", `{}`); code != 0x87 {
		t.Errorf("installer's unlock after hand-over: 0x%02x, want 0x87", code)
	}
	if r := patrick.ask("$config/things/"+enr.Thing, `{"kind":"actuator","attributes":{"x":"y"}}`); r.OK {
		t.Errorf("installer still configures the thing after hand-over")
	}
	d := veil.Engine.Decide(policies.Request{Principal: policies.UserPrincipal("patrick"), Topic: "things/" + enr.Thing + "/data/x", Action: policies.ActRead})
	if d.Allowed() {
		t.Errorf("installer reads the handed-over thing's raw data (rule %s)", d.Rule)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestThingsRetainedMessagesGoWithItsOwner: a thing's retained readings are
// its data subject's: the hand-over clears those kept while the installer
// had it (the new owner does not get them; the device's state stays, to
// operate it by), and deleting the thing clears all of them (a thing
// re-created under the id does not carry them).
func TestThingsRetainedMessagesGoWithItsOwner(t *testing.T) {
	addr := veil.Addr("mqtt")
	addFactory(t, "RV-RT-0001", "factory-RV-RT-0001")
	enr, err := enrollDevice(t, addr, "", "RV-RT-0001", "factory-RV-RT-0001", `{"kind":"sensor","streams":["location"]}`)
	if err != nil || !enr.OK {
		t.Fatalf("enrolment: %v %+v", err, enr)
	}
	id := enr.Thing
	dev, err := dialCfg(t, addr, "", id, enr.Secret, id)
	if err != nil {
		t.Fatal(err)
	}
	retained := func() []string {
		var topics []string
		for topic := range veil.MQTT.Topics.Retained.GetAll() {
			if strings.HasPrefix(topic, "things/"+id+"/") {
				topics = append(topics, topic)
			}
		}
		return topics
	}
	publishRetained := func(topic, payload string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if pr, err := dev.pc.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Retain: true, Payload: []byte(payload)}); err != nil || pr.ReasonCode != 0 {
			t.Fatalf("retained publish %s: %v %+v", topic, err, pr)
		}
	}
	publishRetained("things/"+id+"/data/location", `{"lat":52.37,"lon":4.89}`)
	publishRetained("things/"+id+"/state", `{"battery":80}`)
	if got := retained(); len(got) != 2 {
		t.Fatalf("retained before the hand-over: %v", got)
	}

	patrick := mustCfg(t, addr, "patrick", "patrick-pass")
	an := mustCfg(t, addr, "an", "an-pass")
	patrick.mustOK("$config/things/"+id+"/claim", `{"code":"`+enr.ClaimCode+`"}`)
	inv := patrick.mustOK("$config/things/"+id+"/relations/an", `{"relation":"owner"}`).Inv
	an.mustOK("$config/invitations/an/"+inv+"/answer", `{"accept":true}`)
	waitFor(t, "the installer's retained readings cleared by the hand-over", func() bool {
		got := retained()
		return len(got) == 1 && got[0] == "things/"+id+"/state"
	})

	publishRetained("things/"+id+"/data/location", `{"lat":52.09,"lon":5.12}`)
	if got := retained(); len(got) != 2 {
		t.Fatalf("retained after the hand-over: %v", got)
	}
	an.mustOK("$config/things/"+id, ``)
	waitFor(t, "the deleted thing's retained messages cleared", func() bool { return len(retained()) == 0 })
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
