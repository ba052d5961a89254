package broker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/veil-iot/veil/policies"
)

// TestRestartKeepsWhatOwnersChanged: the bootstrap file, applied at every
// start, does not undo what owners changed over MQTT: a completed hand-over
// stays done (the installer may not unlock, the owner of record stays), a
// revoked relation and a deleted policy stay gone.
func TestRestartKeepsWhatOwnersChanged(t *testing.T) {
	dir := t.TempDir()
	b := startOwn(t, dir, "")
	addr := b.Addr("mqtt")
	an := mustCfg(t, addr, "an", "an-pass")
	patrick := mustCfg(t, addr, "patrick", "patrick-pass")

	// An accepts the bootstrap file's pending hand-over of lock-2.
	inv := an.invitationTo("lock-2")
	an.mustOK("$config/invitations/an/"+inv+"/answer", `{"accept":true}`)
	if code := patrick.publish("things/lock-2/cmd/unlock", `{}`); code != 0x87 {
		t.Fatalf("installer after hand-over: 0x%02x, want 0x87", code)
	}
	// An revokes Ruth's visit and deletes the doctor's policy.
	an.mustOK("$config/things/lock-1/relations/ruth", ``)
	an.mustOK("$config/users/an/policies/doctor-thermo", ``)
	b.Close()

	b = startOwn(t, dir, "")
	defer b.Close()
	addr = b.Addr("mqtt")
	patrick = mustCfg(t, addr, "patrick", "patrick-pass")
	var problems []string
	if code := patrick.publish("things/lock-2/cmd/unlock", `{}`); code != 0x87 {
		problems = append(problems, "after the restart the handed-over installer may unlock lock-2 again")
	}
	if th, _ := b.Engine.Thing("lock-2"); th.Owner != "an" {
		problems = append(problems, "after the restart lock-2 has owner of record "+strings.TrimSpace(th.Owner+" (empty)"))
	}
	for _, r := range b.Engine.Relationships("lock-2", "") {
		if r.User == "an" && r.Status != policies.StatusActive {
			problems = append(problems, "An's accepted owner relation on lock-2 is "+string(r.Status)+" again")
		}
	}
	for _, r := range b.Engine.Relationships("lock-1", "") {
		if r.User == "ruth" {
			problems = append(problems, "Ruth's revoked visitor relation on lock-1 is back")
		}
	}
	for _, p := range b.Engine.Policies("an") {
		if p.ID == "doctor-thermo" {
			problems = append(problems, "An's deleted policy doctor-thermo is back")
		}
	}
	if len(problems) > 0 {
		t.Fatalf("restart undid the control plane:\n  %s", strings.Join(problems, "\n  "))
	}
}

// TestBootstrapSayKeepsItsStartThroughANewWindow: peter's co-ownership of
// home-an, written by the bootstrap file without valid_from, holds from
// the beginning; a new window an gives him keeps that (the history of his
// say), where it used to start at his acceptance.
func TestBootstrapSayKeepsItsStartThroughANewWindow(t *testing.T) {
	b := startOwn(t, t.TempDir(), "")
	defer b.Close()
	addr := b.Addr("mqtt")
	until := time.Now().Add(365 * 24 * time.Hour).UTC().Format(time.RFC3339)
	inv := mustCfg(t, addr, "an", "an-pass").mustOK("$config/places/home-an/relations/peter", `{"relation":"co_owner","valid_until":"`+until+`"}`).Inv
	mustCfg(t, addr, "peter", "peter-pass").mustOK("$config/invitations/peter/"+inv+"/answer", `{"accept":true}`)
	for _, r := range b.Engine.Relationships("", "home-an") {
		if r.User == "peter" && r.Status == policies.StatusActive {
			if r.ValidUntil.IsZero() || !r.ValidFrom.Equal(time.Unix(0, 0)) {
				t.Errorf("peter's new window on home-an: %s to %s, want from the beginning (1970-01-01) to next year", r.ValidFrom, r.ValidUntil)
			}
			return
		}
	}
	t.Fatal("peter has no active relation on home-an")
}
