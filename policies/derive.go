package policies

import (
	"fmt"
	"slices"
	"strings"
)

// Derivations says what a recipient can infer from a stream (thesis NFR3 b):
// stream → the facts or streams derivable from it.
type Derivations map[string][]string

// DefaultDerivations is the built-in table; operators may configure their own.
var DefaultDerivations = Derivations{
	"power":       {"occupancy"},
	"energy":      {"occupancy"},
	"location":    {"home_address", "occupancy"},
	"heart_rate":  {"activity"},
	"door":        {"occupancy"},
	"temperature": {"occupancy"},
}

// Warnings explains what the owner gives away beyond what p names: for each
// stream p shares, what can be derived from it that none of the owner's
// allow policies (p included, in place of the stored one with its id) shares.
func (e *Engine) Warnings(owner string, p Policy) []string {
	if p.Effect != "allow" {
		return nil
	}
	e.mu.RLock()
	defer e.mu.RUnlock()
	shared := map[string]bool{}
	for _, c := range e.policies[owner] {
		if c.allow && c.id != p.ID {
			for _, s := range e.streamsOf(owner, c.source().Resources) {
				shared[s] = true
			}
		}
	}
	granted := e.streamsOf(owner, p.Resources)
	for _, s := range granted {
		shared[s] = true
	}
	var out []string
	for _, s := range granted {
		for _, d := range e.derive[s] {
			if shared[d] {
				continue
			}
			msg := fmt.Sprintf("sharing %s lets the recipient infer %s, which you do not share", s, d)
			if !slices.Contains(out, msg) {
				out = append(out, msg)
			}
		}
	}
	return out
}

// streamsOf lists the streams of owner's things that the resources match.
func (e *Engine) streamsOf(owner string, resources []string) []string {
	var out []string
	add := func(s string) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	for _, r := range resources {
		if s, ok := strings.CutPrefix(r, "stream:"); ok {
			add(s)
			continue
		}
		for _, t := range e.things {
			if t.Owner != owner {
				continue
			}
			for _, s := range t.Streams {
				if MatchTopic(r, "things/"+t.ID+"/data/"+s) {
					add(s)
				}
			}
		}
	}
	slices.Sort(out)
	return out
}
