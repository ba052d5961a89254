package broker_test

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestHistoryAccessInTheOwnersAudit: An sees in her audit trail, under the
// action history, that the doctor read her thermostat's archive (the
// readings released, rounded under doctor-thermo, for the purpose he
// declared) and that the stranger asked and was refused.
func TestHistoryAccessInTheOwnersAudit(t *testing.T) {
	b := archiving(t)
	addr := b.Addr("mqtt")
	thermo := dialAt(t, addr, "thermo-1", "thermo-1-secret", "thermo-1", "")
	from := time.Now().Add(-time.Second)
	for _, p := range []string{`{"temperature":21.37}`, `{"temperature":21.42}`, `{"temperature":21.51}`} {
		thermo.pub("things/thermo-1/data/temperature", p, 1)
	}
	drainArchive(t)
	body := fmt.Sprintf(`{"from":%q,"to":%q}`, from.UTC().Format(time.RFC3339Nano), time.Now().Add(time.Second).UTC().Format(time.RFC3339Nano))
	const purpose = "history-audit" // this test's own: its records are no other test's
	released := 0
	for _, who := range []string{"doctor", "stranger"} {
		c := dialAt(t, addr, who, who+"-pass", who+"-hist-audit", "")
		c.sub("$config/replies/"+c.id+"/#", "")
		pages := c.history("$history/things/thermo-1/data/temperature", body, purpose, "")
		if last := pages[len(pages)-1]; last.OK != (who == "doctor") {
			t.Fatalf("%s's history: %+v", who, pages)
		}
		if who == "doctor" {
			for _, p := range pages {
				released += len(p.Readings)
			}
		}
	}
	if released != 3 {
		t.Fatalf("the doctor was released %d readings, want 3", released)
	}
	an := mustCfg(t, addr, "an", "an-pass")
	want := map[string]auditRecord{
		"doctor":   {Who: "doctor", Thing: "thermo-1", Stream: "temperature", Action: "history", Purpose: purpose, Effect: "constrained", Rule: "policy", Policy: "doctor-thermo", Count: 3},
		"stranger": {Who: "stranger", Thing: "thermo-1", Stream: "temperature", Action: "history", Purpose: purpose, Effect: "deny", Rule: "default", Count: 1},
	}
	// An answer is recorded when it ends, after its last page: ask until
	// the records are there.
	var got map[string]auditRecord
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got = map[string]auditRecord{}
		for _, r := range an.mustOK("$config/users/an/audit/query", `{"since":"1h"}`).Records {
			if r.Action == "history" && r.Purpose == purpose {
				got[r.Who] = r
			}
		}
		if fmt.Sprint(got) == fmt.Sprint(want) || time.Now().After(deadline) {
			break
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		var b strings.Builder
		for who, r := range got {
			fmt.Fprintf(&b, "\n %s: %+v", who, r)
		}
		t.Fatalf("An's audit trail of history requests:%s\nwant %+v", b.String(), want)
	}
}
