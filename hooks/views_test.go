package hooks

import (
	"errors"
	"sync/atomic"
	"testing"

	"github.com/veil-iot/veil/policies"
)

// A message's verdict and bytes in each view do not depend on the order
// its views render it in: the first rewriting view renders from the bytes
// (Apply), later ones from one parse, and a view that only rate-limits
// withholds what is not a JSON object, as every constrained view does.
func TestRenderMessageInAnyOrder(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	view := func(cs ...policies.Constraint) *policies.View {
		t.Helper()
		v, err := policies.NewView(key, cs)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	tenth := view(policies.Constraint{Kind: policies.ConstraintAccuracy, Field: "temperature", Step: 0.1})
	whole := view(policies.Constraint{Kind: policies.ConstraintAccuracy, Field: "temperature", Step: 1})
	rateOnly := view(policies.Constraint{Kind: policies.ConstraintRate, Seconds: 1})
	views := map[string]*policies.View{"tenth": tenth, "whole": whole, "rate": rateOnly}
	orders := [][]string{
		{"tenth", "whole", "rate"}, {"whole", "rate", "tenth"}, {"rate", "tenth", "whole"},
		{"rate", "whole", "tenth"}, {"tenth", "rate", "whole"}, {"whole", "tenth", "rate"},
	}
	for _, c := range []struct {
		name    string
		payload string
		want    map[string]string // "" = withheld
	}{
		{"reading", `{"temperature":21.37,"seq":7}`,
			map[string]string{"tenth": `{"temperature":21.4,"seq":7}`, "whole": `{"temperature":21,"seq":7}`, "rate": `{"temperature":21.37,"seq":7}`}},
		{"not JSON", `21.37`, map[string]string{"tenth": "", "whole": "", "rate": ""}},
		{"not an object", `[21.37]`, map[string]string{"tenth": "", "whole": "", "rate": ""}},
		{"field missing", `{"seq":7}`, map[string]string{"tenth": "", "whole": "", "rate": `{"seq":7}`}},
	} {
		for _, order := range orders {
			r := newRenderings(64)
			var parsed atomic.Int64
			m := newMessage("things/thermo-1/data/temperature", []byte(c.payload), &parsed)
			for round := range 2 { // the second round finds the memo
				for _, name := range order {
					out, err := r.renderMessage(views[name], m)
					want := c.want[name]
					switch {
					case want == "" && !errors.Is(err, policies.ErrWithheld):
						t.Errorf("%s, order %v, round %d, view %s: %q, %v; want withheld", c.name, order, round, name, out, err)
					case want != "" && (err != nil || string(out) != want):
						t.Errorf("%s, order %v, round %d, view %s: %q, %v; want %s", c.name, order, round, name, out, err, want)
					}
				}
			}
			// Two memo slots: the third view renders again in the second round.
			if parses, renders := r.parses.Load()+parsed.Load(), r.renders.Load(); parses > 2 || renders > 4 {
				t.Errorf("%s, order %v: %d parses, %d renders; want at most 2 and 4", c.name, order, parses, renders)
			}
		}
	}
}

// Two publishers on one topic may share a message and render it at once:
// one of them holds the rendering in the message itself, the other
// allocates its own, and each gets, and leaves in the table, its view's
// bytes (the race detector watches the message's first rendering).
func TestRenderMessageConcurrently(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	tenth, err := policies.NewView(key, []policies.Constraint{{Kind: policies.ConstraintAccuracy, Field: "temperature", Step: 0.1}})
	if err != nil {
		t.Fatal(err)
	}
	whole, err := policies.NewView(key, []policies.Constraint{{Kind: policies.ConstraintAccuracy, Field: "temperature", Step: 1}})
	if err != nil {
		t.Fatal(err)
	}
	want := map[*policies.View]string{tenth: `{"temperature":21.4}`, whole: `{"temperature":21}`}
	for range 200 {
		r := newRenderings(64)
		raw := []byte(`{"temperature":21.37}`)
		m := newMessage("things/thermo-1/data/temperature", raw, nil)
		done := make(chan string, 2)
		for _, v := range []*policies.View{tenth, whole} {
			go func() {
				out, err := r.renderMessage(v, m)
				if err != nil || string(out) != want[v] {
					done <- string(out)
					return
				}
				done <- ""
			}()
		}
		for range 2 {
			if got := <-done; got != "" {
				t.Fatalf("a concurrent rendering wrote %q", got)
			}
		}
		for v, w := range want {
			if out, err := r.render(v, raw); err != nil || string(out) != w {
				t.Fatalf("the table holds %q, %v; want %s", out, err, w)
			}
		}
	}
}
