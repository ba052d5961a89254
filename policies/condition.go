package policies

import (
	"strings"
	"time"
)

// Clock tells the engine the time; tests inject a fixed one.
type Clock interface{ Now() time.Time }

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// ContextProvider supplies the latest live values for data.{thing}.{stream}.{field}
// conditions (thesis §5.1.4: the Context Provider). Implementations must be
// safe for concurrent use and must not call back into the Engine.
type ContextProvider interface {
	Value(thing, stream, field string) (any, bool)
}

type namespace uint8

const (
	nsRequester namespace = iota + 1
	nsThing
	nsData
	nsEnvHour
	nsEnvWeekday
	nsEnvTime
	nsPurpose
	nsAction
)

// attrPath is a compiled attribute reference.
type attrPath struct {
	ns                   namespace
	key                  string // requester.{key}, thing.{key}
	thing, stream, field string // data.{thing}.{stream}.{field}
}

func compileAttr(s string) (attrPath, bool) {
	head, rest, ok := strings.Cut(s, ".")
	if !ok || rest == "" {
		return attrPath{}, false
	}
	switch head {
	case "requester":
		return attrPath{ns: nsRequester, key: rest}, true
	case "thing":
		return attrPath{ns: nsThing, key: rest}, true
	case "data":
		parts := strings.SplitN(rest, ".", 3)
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			return attrPath{}, false
		}
		return attrPath{ns: nsData, thing: parts[0], stream: parts[1], field: parts[2]}, true
	case "env":
		switch rest {
		case "hour":
			return attrPath{ns: nsEnvHour}, true
		case "weekday":
			return attrPath{ns: nsEnvWeekday}, true
		case "time":
			return attrPath{ns: nsEnvTime}, true
		}
	case "request":
		switch rest {
		case "purpose":
			return attrPath{ns: nsPurpose}, true
		case "action":
			return attrPath{ns: nsAction}, true
		}
	}
	return attrPath{}, false
}

type condKind uint8

const (
	condAll condKind = iota + 1
	condAny
	condNot
	condSimple
)

// cond is a compiled Condition.
type cond struct {
	kind  condKind
	kids  []cond
	left  attrPath
	op    Op
	value any // literal right side
	ref   *attrPath
}

func compileCond(c *Condition) (cond, bool) {
	switch {
	case c.All != nil, c.Any != nil:
		k, list := condAll, c.All
		if c.Any != nil {
			k, list = condAny, c.Any
		}
		out := cond{kind: k, kids: make([]cond, len(list))}
		for i := range list {
			kid, ok := compileCond(&list[i])
			if !ok {
				return cond{}, false
			}
			out.kids[i] = kid
		}
		return out, true
	case c.Not != nil:
		kid, ok := compileCond(c.Not)
		if !ok {
			return cond{}, false
		}
		return cond{kind: condNot, kids: []cond{kid}}, true
	}
	left, ok := compileAttr(c.Attr)
	if !ok {
		return cond{}, false
	}
	out := cond{kind: condSimple, left: left, op: c.Op, value: normalizeValue(c.Value)}
	if c.Ref != "" {
		r, ok := compileAttr(c.Ref)
		if !ok {
			return cond{}, false
		}
		out.ref = &r
	}
	return out, true
}

func normalizeValue(v any) any {
	if list, ok := v.([]any); ok {
		out := make([]any, len(list))
		for i, x := range list {
			out[i], _ = normalizeScalar(x)
		}
		return out
	}
	n, _ := normalizeScalar(v)
	return n
}

// eval evaluates the condition for one request. Missing attributes make a
// simple condition false (so "ne" never grants on an absent attribute).
func (c *cond) eval(x *evalCtx) bool {
	switch c.kind {
	case condAll:
		for i := range c.kids {
			if !c.kids[i].eval(x) {
				return false
			}
		}
		return true
	case condAny:
		for i := range c.kids {
			if c.kids[i].eval(x) {
				return true
			}
		}
		return false
	case condNot:
		return !c.kids[0].eval(x)
	}
	left, ok := x.attr(c.left)
	if !ok {
		return false
	}
	right := c.value
	if c.ref != nil {
		if right, ok = x.attr(*c.ref); !ok {
			return false
		}
	}
	return compare(c.op, left, right)
}

func compare(op Op, left, right any) bool {
	switch op {
	case OpEq:
		return equal(left, right)
	case OpNe:
		return !equal(left, right)
	case OpLt, OpLe, OpGt, OpGe:
		c, ok := order(left, right)
		if !ok {
			return false
		}
		switch op {
		case OpLt:
			return c < 0
		case OpLe:
			return c <= 0
		case OpGt:
			return c > 0
		}
		return c >= 0
	case OpIn:
		list, _ := right.([]any)
		for _, v := range list {
			if equal(left, v) {
				return true
			}
		}
		return false
	case OpBetween:
		list, _ := right.([]any)
		if len(list) != 2 {
			return false
		}
		lo, ok1 := order(left, list[0])
		hi, ok2 := order(left, list[1])
		return ok1 && ok2 && lo >= 0 && hi <= 0
	case OpPrefix, OpContains:
		l, ok1 := left.(string)
		r, ok2 := right.(string)
		if !ok1 || !ok2 {
			return false
		}
		if op == OpPrefix {
			return strings.HasPrefix(l, r)
		}
		return strings.Contains(l, r)
	}
	return false
}

func equal(a, b any) bool {
	switch x := a.(type) {
	case string:
		y, ok := b.(string)
		return ok && x == y
	case float64:
		y, ok := b.(float64)
		return ok && x == y
	case bool:
		y, ok := b.(bool)
		return ok && x == y
	}
	return false
}

// order compares two numbers or two strings.
func order(a, b any) (int, bool) {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		if !ok {
			return 0, false
		}
		switch {
		case x < y:
			return -1, true
		case x > y:
			return 1, true
		}
		return 0, true
	case string:
		y, ok := b.(string)
		if !ok {
			return 0, false
		}
		return strings.Compare(x, y), true
	}
	return 0, false
}

// attr resolves an attribute for the request being evaluated. Reading the
// clock or live data marks the decision as time-bound or dynamic.
func (x *evalCtx) attr(p attrPath) (any, bool) {
	switch p.ns {
	case nsRequester:
		return x.requesterAttr(p.key)
	case nsThing:
		return thingAttr(x.thing, p.key)
	case nsData:
		x.dynamic = true
		values := x.values
		if values == nil {
			values = x.e.context
		}
		if values == nil {
			return nil, false
		}
		v, ok := values.Value(p.thing, p.stream, p.field)
		if !ok {
			return nil, false
		}
		return normalizeScalar(v)
	case nsEnvHour:
		t := x.local()
		x.expireAt(nextHour(t))
		return float64(t.Hour()), true
	case nsEnvWeekday:
		t := x.local()
		x.expireAt(nextDay(t))
		return strings.ToLower(t.Weekday().String()), true
	case nsEnvTime:
		t := x.local()
		x.expireAt(nextMinute(t))
		return t.Format("15:04"), true
	case nsPurpose:
		return x.req.Purpose, true
	case nsAction:
		return string(x.req.Action), true
	}
	return nil, false
}

func (x *evalCtx) requesterAttr(key string) (any, bool) {
	if x.user != nil {
		switch key {
		case "id", "name":
			return x.user.Name, true
		case "type":
			return "user", true
		case "admin":
			return x.user.Admin, true
		}
		v, ok := x.user.Attributes[key]
		return v, ok
	}
	if x.requesterThing != nil {
		if key == "type" {
			return "thing", true
		}
		return thingAttr(x.requesterThing, key)
	}
	return nil, false
}

func thingAttr(t *Thing, key string) (any, bool) {
	if t == nil {
		return nil, false
	}
	switch key {
	case "id":
		return t.ID, true
	case "owner":
		return t.Owner, t.Owner != ""
	case "kind":
		return t.Kind, t.Kind != ""
	case "place":
		return t.Place, t.Place != ""
	}
	v, ok := t.Attributes[key]
	return v, ok
}

// nextHour is when the local hour of t next changes. Counted from t, not
// built with time.Date: in the hour a clock goes back, time.Date names the
// second 02:00 (say) where the hour changes at the first.
func nextHour(t time.Time) time.Time {
	next := t.Add(time.Hour - time.Duration(t.Minute())*time.Minute - time.Duration(t.Second())*time.Second - time.Duration(t.Nanosecond()))
	return zoneEndFirst(t, next, func(x time.Time) bool { return x.Hour() != t.Hour() })
}

// nextMinute is when the local minute of t next changes.
func nextMinute(t time.Time) time.Time {
	next := t.Add(time.Minute - time.Duration(t.Second())*time.Second - time.Duration(t.Nanosecond()))
	return zoneEndFirst(t, next, func(x time.Time) bool { return x.Minute() != t.Minute() })
}

// nextDay is when the local date of t next changes: the next midnight, its
// first occurrence where a clock goes back across midnight, or where a
// clock skips midnight the instant it skips to (time.Date names 23:00 of
// the day before there, or the second midnight where it comes twice).
func nextDay(t time.Time) time.Time {
	otherDay := func(x time.Time) bool { return x.YearDay() != t.YearDay() || x.Year() != t.Year() }
	c := time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, t.Location())
	next := t.Add(time.Hour) // no midnight where expected: look again soon
	for _, x := range [...]time.Time{c.Add(-time.Hour), c, c.Add(time.Hour)} {
		if x.After(t) && otherDay(x) {
			next = x
			break
		}
	}
	return zoneEndFirst(t, next, otherDay)
}

// zoneEndFirst returns next, or the end of t's zone offset if that comes
// first and changed holds there: a clock change off the hour (Chatham's at
// :45) changes the local hour at that instant.
func zoneEndFirst(t, next time.Time, changed func(time.Time) bool) time.Time {
	if _, end := t.ZoneBounds(); !end.IsZero() && end.After(t) && end.Before(next) && changed(end.In(t.Location())) {
		return end
	}
	return next
}
