package hooks_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/veil-iot/veil/hooks"
	"github.com/veil-iot/veil/policies"
)

// auditCall is one call of an AuditFunc, as the owner's record shows it.
type auditCall struct {
	who, purpose, effect, reason, resource string
	n                                      int64
}

// auditCalls is an AuditFunc that keeps its calls.
type auditCalls struct {
	mu    sync.Mutex
	calls []auditCall
}

func (a *auditCalls) record(p policies.Principal, act policies.Action, purpose string, d *policies.Decision, n int64) {
	effect := "deny"
	if d.Allowed() {
		effect = "allow"
		if d.View != nil {
			effect = "constrained"
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, auditCall{who: p.ID + " " + string(act), purpose: purpose, effect: effect, reason: d.Reason(),
		resource: d.Owner + ":" + d.Thing + "/" + d.Stream, n: n})
}

// take waits up to a second for n calls, then returns and forgets them all.
func (a *auditCalls) take(n int) []auditCall {
	for deadline := time.Now().Add(time.Second); ; time.Sleep(5 * time.Millisecond) {
		a.mu.Lock()
		if len(a.calls) >= n || time.Now().After(deadline) {
			calls := a.calls
			a.calls = nil
			a.mu.Unlock()
			return calls
		}
		a.mu.Unlock()
	}
}

// readings is an archive of n readings a second apart, ending a minute ago.
type readings int

func (n readings) History(_ context.Context, _, _ string, from, to time.Time, fn func(time.Time, []byte) bool) error {
	start := time.Now().Add(-time.Minute - time.Duration(n)*time.Second)
	for i := range int(n) {
		t := start.Add(time.Duration(i) * time.Second)
		if !t.Before(from) && t.Before(to) && !fn(t, []byte(fmt.Sprintf(`{"temperature":21.%d7}`, i%10))) {
			return nil
		}
	}
	return nil
}

// TestHistoryRequestsAudited: every history request decided reaches the
// audit trail under the action history: an answer as the readings it
// released (over all its pages, no more than its limit), under the
// purpose it was decided for; a refusal once, as denied. A request never
// decided (malformed) is no access and not recorded. The owner's own
// request is told too: the trail leaves it out, as it does live reads.
func TestHistoryRequestsAudited(t *testing.T) {
	e, creds := historyHousehold(t)
	var audit auditCalls
	addr := serveHistory(t, e, creds, readings(1200), func(c *hooks.HistoryConfig) { c.Audit = audit.record })
	const thermo = "an:thermo-1/temperature"
	for _, c := range []struct {
		name, who, body, purpose string
		pages                    int // of the answer; 0: refused
		want                     []auditCall
	}{
		{"the doctor's answer", "doctor", `{"limit":2}`, "care", 1,
			[]auditCall{{"doctor history", "care", "constrained", "policy:doctor-thermo-history", thermo, 2}}},
		{"an answer of three pages", "doctor", `{"limit":1100}`, "", 3,
			[]auditCall{{"doctor history", "", "constrained", "policy:doctor-thermo-history", thermo, 1100}}},
		{"the stranger refused", "stranger", `{}`, "curiosity", 0,
			[]auditCall{{"stranger history", "curiosity", "deny", "deny:default", thermo, 1}}},
		{"a malformed request", "stranger", `{"limit":0}`, "", 0, nil},
		{"the owner's answer", "an", `{"limit":5}`, "", 1,
			[]auditCall{{"an history", "", "allow", "rule:owner", thermo, 5}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			pages := newAsker(t, addr, c.who+"-audit", c.who).ask(c.body, c.purpose)
			if c.pages == 0 && (len(pages) != 1 || pages[0].OK) || c.pages > 0 && (len(pages) != c.pages || !pages[len(pages)-1].OK) {
				t.Fatalf("answer %+v, want %d pages", pages, c.pages)
			}
			if got := audit.take(len(c.want)); !slices.Equal(got, c.want) {
				t.Fatalf("audit\n got %+v\nwant %+v", got, c.want)
			}
		})
	}
}
