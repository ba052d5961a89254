package policies

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

type subjectKind uint8

const (
	subjAny subjectKind = iota + 1
	subjUser
	subjThing
	subjRole
	subjRelation
	subjUserset
)

type subject struct {
	kind  subjectKind
	value string
}

func parseSubject(s string) (subject, bool) {
	if s == "*" {
		return subject{kind: subjAny}, true
	}
	kind, value, ok := strings.Cut(s, ":")
	if !ok || value == "" || kind == "" {
		return subject{}, false
	}
	if strings.Contains(value, "#") {
		id, rel, _ := strings.Cut(value, "#")
		if id == "" || rel == "" {
			return subject{}, false
		}
		return subject{kind: subjUserset, value: s}, true
	}
	switch kind {
	case "user":
		return subject{kind: subjUser, value: value}, true
	case "thing":
		return subject{kind: subjThing, value: value}, true
	case "role":
		return subject{kind: subjRole, value: value}, true
	case "relation":
		if !Relation(value).Valid() {
			return subject{}, false
		}
		return subject{kind: subjRelation, value: value}, true
	}
	return subject{}, false
}

// resource is a compiled policy resource: a topic filter, or a stream name
// matching that stream's data topic on any of the owner's things.
type resource struct {
	filter string
	stream string
}

func (r resource) matches(topic string, res Resource) bool {
	if r.stream != "" {
		return res.Kind == ResData && res.Name == r.stream
	}
	return MatchTopic(r.filter, topic)
}

// overlaps reports whether the resource could match a topic the filter matches.
func (r resource) overlaps(filter string) bool {
	if r.stream != "" {
		return FiltersOverlap(filter, "things/+/data/"+r.stream)
	}
	return FiltersOverlap(r.filter, filter)
}

// compiled is a policy ready for evaluation.
type compiled struct {
	owner     string
	p         Policy
	allow     bool
	subjects  []subject
	resources []resource
	actions   uint8 // bit per Action
	purposes  []string
	when      *cond
	view      *View
}

func actionBit(a Action) uint8 {
	for i, x := range Actions {
		if x == a {
			return 1 << i
		}
	}
	return 0
}

func compilePolicy(owner string, p Policy, key []byte) (*compiled, error) {
	c := &compiled{owner: owner, p: p, allow: p.Effect == "allow", purposes: p.Purposes}
	if p.Effect != "allow" && p.Effect != "deny" {
		return nil, fmt.Errorf("policy %q: effect must be allow or deny", p.ID)
	}
	if p.ID == "" {
		return nil, fmt.Errorf("policy id must not be empty")
	}
	for _, s := range p.Subjects {
		sub, ok := parseSubject(s)
		if !ok {
			return nil, fmt.Errorf("policy %q: invalid subject %q", p.ID, s)
		}
		c.subjects = append(c.subjects, sub)
	}
	for _, r := range p.Resources {
		if stream, ok := strings.CutPrefix(r, "stream:"); ok {
			c.resources = append(c.resources, resource{stream: stream})
			continue
		}
		if !ValidFilter(r) {
			return nil, fmt.Errorf("policy %q: invalid resource %q", p.ID, r)
		}
		c.resources = append(c.resources, resource{filter: r})
	}
	for _, a := range p.Actions {
		b := actionBit(a)
		if b == 0 {
			return nil, fmt.Errorf("policy %q: unknown action %q", p.ID, a)
		}
		c.actions |= b
	}
	if p.When != nil {
		w, ok := compileCond(p.When)
		if !ok {
			return nil, fmt.Errorf("policy %q: invalid condition", p.ID)
		}
		c.when = &w
	}
	if len(p.Constraints) > 0 {
		v, err := NewView(key, p.Constraints)
		if err != nil {
			return nil, fmt.Errorf("policy %q: %w", p.ID, err)
		}
		c.view = v
	}
	return c, nil
}

// applies reports whether the policy covers the action, purpose and resource.
func (c *compiled) applies(req *Request, res Resource) bool {
	if c.actions&actionBit(req.Action) == 0 {
		return false
	}
	if len(c.purposes) > 0 && !slices.Contains(c.purposes, req.Purpose) {
		return false
	}
	for _, r := range c.resources {
		if r.matches(req.Topic, res) {
			return true
		}
	}
	return false
}

// comparePolicies orders by ascending priority, then id, then owner.
func comparePolicies(a, b *compiled) int {
	return cmp.Or(cmp.Compare(a.p.Priority, b.p.Priority), strings.Compare(a.p.ID, b.p.ID), strings.Compare(a.owner, b.owner))
}
