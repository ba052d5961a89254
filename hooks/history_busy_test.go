package hooks_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// heldArchive holds its first hold queries until release closes, as
// InfluxDB does a long range or a query queued behind others; later
// queries are answered at once.
type heldArchive struct {
	mu      sync.Mutex
	hold    int
	started chan struct{} // one per held query
	release chan struct{}
}

func (a *heldArchive) History(ctx context.Context, _, _ string, _, to time.Time, fn func(time.Time, []byte) bool) error {
	a.mu.Lock()
	held := a.hold > 0
	a.hold--
	a.mu.Unlock()
	if held {
		a.started <- struct{}{}
		select {
		case <-a.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	fn(to.Add(-time.Minute), []byte(`{"temperature":21.37}`))
	return nil
}

// TestHistoryBusyPerRequester: a requester runs at most 2 history
// queries at once: its next is refused busy, saying so, while everyone
// else is still served from the 8 slots all share; once those are taken,
// everyone is busy. A query answered frees its slots.
func TestHistoryBusyPerRequester(t *testing.T) {
	for _, c := range []struct {
		name    string
		holding map[string]int // requester → slow queries running
		refused string         // asks while they run…
		busy    string         // …and is answered this
		served  []string       // these are served meanwhile
	}{
		{"one requester at its cap", map[string]int{"doctor": 2}, "doctor", "busy: 2 of your history queries are in progress",
			[]string{"an", "u1", "u2"}},
		{"one requester below its cap", map[string]int{"doctor": 1}, "", "", []string{"doctor", "an"}},
		{"every slot taken", map[string]int{"u1": 2, "u2": 2, "u3": 2, "u4": 2}, "an", "busy: too many history queries in progress", nil},
		{"every slot but one", map[string]int{"u1": 2, "u2": 2, "u3": 2, "u4": 1}, "u1", "busy: 2 of your", []string{"an"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, creds := historyHousehold(t, "u1", "u2", "u3", "u4")
			held := 0
			for _, n := range c.holding {
				held += n
			}
			archive := &heldArchive{hold: held, started: make(chan struct{}, held), release: make(chan struct{})}
			addr := serveHistory(t, e, creds, archive)
			askers := map[string]*asker{}
			who := func(name string) *asker {
				if askers[name] == nil {
					askers[name] = newAsker(t, addr, name+"-h", name)
				}
				return askers[name]
			}
			type pending struct {
				a    *asker
				corr string
			}
			var slow []pending
			for name, n := range c.holding {
				for range n {
					slow = append(slow, pending{who(name), who(name).send(`{}`, "")})
				}
			}
			for range held {
				select {
				case <-archive.started:
				case <-time.After(5 * time.Second):
					t.Fatal("the slow queries did not start")
				}
			}
			if c.refused != "" {
				pages := who(c.refused).ask(`{}`, "")
				if len(pages) != 1 || pages[0].OK || !strings.HasPrefix(pages[0].Error, c.busy) {
					t.Fatalf("%s while %v run: %+v, want %q", c.refused, c.holding, pages, c.busy)
				}
			}
			for _, name := range c.served {
				if pages := who(name).ask(`{}`, ""); len(pages) != 1 || !pages[0].OK || len(pages[0].Readings) != 1 {
					t.Fatalf("%s while %v run: %+v, want served", name, c.holding, pages)
				}
			}
			close(archive.release)
			for _, p := range slow {
				if pages := p.a.answer(p.corr); len(pages) != 1 || !pages[0].OK {
					t.Fatalf("a slow query: %+v", pages)
				}
			}
			// Answered, the slow queries free their slots.
			for name := range c.holding {
				for range 2 {
					if pages := who(name).ask(`{}`, ""); len(pages) != 1 || !pages[0].OK {
						t.Fatalf("%s after its queries were answered: %+v", name, pages)
					}
				}
			}
		})
	}
}
