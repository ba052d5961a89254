package policies

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// designExample is the policy document shown in DESIGN.md.
const designExample = `{
  "id": "doctor-location",
  "description": "Doctors see my location to about 1 km; precisely when my heart rate is above 140",
  "priority": 10,
  "effect": "allow",
  "subjects": ["role:doctor"],
  "resources": ["things/watch-1/data/location"],
  "actions": ["read", "history"],
  "purposes": ["diagnosis"],
  "when": {"all": [{"attr": "env.hour", "op": "between", "value": [8, 18]}]},
  "constraints": [{"kind": "accuracy", "field": "lat", "step": 0.01},
                  {"kind": "accuracy", "field": "lon", "step": 0.01}]
}`

// baseFields is a minimal valid document, as ordered key/raw-JSON pairs.
var baseFields = [][2]string{
	{"id", `"p1"`},
	{"priority", `1`},
	{"effect", `"allow"`},
	{"subjects", `["user:ruth"]`},
	{"resources", `["things/lamp-1/data/#"]`},
	{"actions", `["read"]`},
}

// doc renders the base document with overrides: pairs of key and raw JSON.
// An empty raw value removes the key; keys not in the base are appended.
func doc(overrides ...string) string {
	fields := slices.Clone(baseFields)
	for i := 0; i+1 < len(overrides); i += 2 {
		k, raw := overrides[i], overrides[i+1]
		j := slices.IndexFunc(fields, func(f [2]string) bool { return f[0] == k })
		switch {
		case j < 0:
			fields = append(fields, [2]string{k, raw})
		default:
			fields[j][1] = raw
		}
	}
	var b strings.Builder
	b.WriteString("{")
	sep := ""
	for _, f := range fields {
		if f[1] == "" {
			continue
		}
		b.WriteString(sep)
		b.WriteString(`"` + f[0] + `": ` + f[1])
		sep = ", "
	}
	b.WriteString("}")
	return b.String()
}

// base is the Policy doc() parses to without overrides.
func base() Policy {
	return Policy{
		ID:        "p1",
		Priority:  1,
		Effect:    "allow",
		Subjects:  []string{"user:ruth"},
		Resources: []string{"things/lamp-1/data/#"},
		Actions:   []Action{ActRead},
	}
}

func ptr(f float64) *float64 { return &f }

// problems returns the problem strings of a *ValidationError.
func problems(t *testing.T, err error) []string {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *ValidationError", err, err)
	}
	out := make([]string, len(ve.Problems))
	for i, p := range ve.Problems {
		out[i] = p.String()
	}
	return out
}

// roundTrip checks that the canonical encoding parses back to p.
func roundTrip(t *testing.T, p Policy) {
	t.Helper()
	out, err := json.Marshal(p)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	q, err := ParsePolicy(out)
	if err != nil {
		t.Fatalf("canonical form %s does not parse: %v", out, err)
	}
	if !reflect.DeepEqual(p, q) {
		t.Fatalf("round trip changed the policy:\n got %#v\nwant %#v\n via %s", q, p, out)
	}
}

// validCase is a document ParsePolicy must accept, and what it decodes to.
type validCase struct {
	name string
	doc  string
	want Policy
}

// validPolicyCases are the accepted documents of TestParsePolicyValid; the
// compile test runs them through NewView as well.
func validPolicyCases() []validCase {
	with := func(f func(*Policy)) Policy {
		p := base()
		f(&p)
		return p
	}
	return []validCase{
		{"design example", designExample, Policy{
			ID:          "doctor-location",
			Description: "Doctors see my location to about 1 km; precisely when my heart rate is above 140",
			Priority:    10,
			Effect:      "allow",
			Subjects:    []string{"role:doctor"},
			Resources:   []string{"things/watch-1/data/location"},
			Actions:     []Action{ActRead, ActHistory},
			Purposes:    []string{"diagnosis"},
			When: &Condition{All: []Condition{
				{Attr: "env.hour", Op: OpBetween, Value: []any{8.0, 18.0}},
			}},
			Constraints: []Constraint{
				{Kind: ConstraintAccuracy, Field: "lat", Step: 0.01},
				{Kind: ConstraintAccuracy, Field: "lon", Step: 0.01},
			},
		}},
		{"minimal", doc(), base()},
		{"subject forms",
			doc("subjects", `["*", "user:ruth", "thing:thermostat-2", "role:doctor", "relation:owner", "relation:co_owner",
				"relation:installer", "relation:visitor", "org:acme#member", "team:night#member", "user:ruth#friend", "org:acme:eu#member"]`),
			with(func(p *Policy) {
				p.Subjects = []string{"*", "user:ruth", "thing:thermostat-2", "role:doctor", "relation:owner", "relation:co_owner",
					"relation:installer", "relation:visitor", "org:acme#member", "team:night#member", "user:ruth#friend", "org:acme:eu#member"}
			})},
		{"resource forms",
			doc("resources", `["stream:location", "things/+/data/location", "things/watch-1/data/#", "#", "things/lamp-1"]`),
			with(func(p *Policy) {
				p.Resources = []string{"stream:location", "things/+/data/location", "things/watch-1/data/#", "#", "things/lamp-1"}
			})},
		{"every action, negative priority, description",
			doc("actions", `["publish", "read", "command", "history", "configure"]`, "priority", `-2147483648`, "description", `""`),
			with(func(p *Policy) {
				p.Actions = Actions
				p.Priority = -2147483648
			})},
		{"deny without constraints", doc("effect", `"deny"`, "constraints", `[]`),
			with(func(p *Policy) { p.Effect = "deny" })},
		{"each constraint kind", doc("constraints", `[
				{"kind": "accuracy", "field": "temperature", "step": 10},
				{"kind": "geo", "lat": "lat", "lon": "lon", "meters": 1000},
				{"kind": "range", "field": "temperature", "min": -10, "max": 40.5},
				{"kind": "range", "field": "humidity", "max": 0},
				{"kind": "range", "field": "humidity", "min": 3, "max": 3},
				{"kind": "fields", "keep": ["temperature", "ts"]},
				{"kind": "fields", "drop": ["serial"]},
				{"kind": "pseudonymize", "field": "patient"},
				{"kind": "rate", "seconds": 0.5}]`),
			with(func(p *Policy) {
				p.Constraints = []Constraint{
					{Kind: ConstraintAccuracy, Field: "temperature", Step: 10},
					{Kind: ConstraintGeo, Lat: "lat", Lon: "lon", Meters: 1000},
					{Kind: ConstraintRange, Field: "temperature", Min: ptr(-10), Max: ptr(40.5)},
					{Kind: ConstraintRange, Field: "humidity", Max: ptr(0)},
					{Kind: ConstraintRange, Field: "humidity", Min: ptr(3), Max: ptr(3)},
					{Kind: ConstraintFields, Keep: []string{"temperature", "ts"}},
					{Kind: ConstraintFields, Drop: []string{"serial"}},
					{Kind: ConstraintPseudonymize, Field: "patient"},
					{Kind: ConstraintRate, Seconds: 0.5},
				}
			})},
		{"nested all, any, not", doc("when", `{"any": [
				{"all": [{"attr": "env.weekday", "op": "in", "value": ["saturday", "sunday"]},
				         {"not": {"attr": "env.time", "op": "between", "value": ["00:00", "07:59"]}}]},
				{"attr": "requester.certified", "op": "eq", "value": true},
				{"attr": "data.watch-1.heart.rate", "op": "gt", "value": 140},
				{"attr": "data.watch-1.position.fix.quality", "op": "ge", "value": 2},
				{"attr": "thing.kind", "op": "prefix", "value": "sens"},
				{"attr": "request.purpose", "op": "contains", "value": ""},
				{"attr": "request.action", "op": "ne", "value": "history"},
				{"attr": "env.hour", "op": "lt", "value": 0},
				{"attr": "requester.level", "op": "in", "value": [1, "two", false]}]}`),
			with(func(p *Policy) {
				p.When = &Condition{Any: []Condition{
					{All: []Condition{
						{Attr: "env.weekday", Op: OpIn, Value: []any{"saturday", "sunday"}},
						{Not: &Condition{Attr: "env.time", Op: OpBetween, Value: []any{"00:00", "07:59"}}},
					}},
					{Attr: "requester.certified", Op: OpEq, Value: true},
					{Attr: "data.watch-1.heart.rate", Op: OpGt, Value: 140.0},
					{Attr: "data.watch-1.position.fix.quality", Op: OpGe, Value: 2.0},
					{Attr: "thing.kind", Op: OpPrefix, Value: "sens"},
					{Attr: "request.purpose", Op: OpContains, Value: ""},
					{Attr: "request.action", Op: OpNe, Value: "history"},
					{Attr: "env.hour", Op: OpLt, Value: 0.0},
					{Attr: "requester.level", Op: OpIn, Value: []any{1.0, "two", false}},
				}}
			})},
		{"ref conditions", doc("when", `{"all": [
				{"attr": "requester.org", "op": "eq", "ref": "thing.org"},
				{"attr": "data.lamp-1.power.watts", "op": "le", "ref": "thing.max_watts"},
				{"attr": "thing.owner", "op": "ne", "ref": "requester.id"}]}`),
			with(func(p *Policy) {
				p.When = &Condition{All: []Condition{
					{Attr: "requester.org", Op: OpEq, Ref: "thing.org"},
					{Attr: "data.lamp-1.power.watts", Op: OpLe, Ref: "thing.max_watts"},
					{Attr: "thing.owner", Op: OpNe, Ref: "requester.id"},
				}}
			})},
		{"literal kinds", doc("when", `{"all": [
				{"attr": "thing.floor", "op": "eq", "value": 0},
				{"attr": "thing.name", "op": "eq", "value": ""},
				{"attr": "thing.ok", "op": "eq", "value": false},
				{"attr": "thing.x", "op": "between", "value": [-1.5e3, 2E2]},
				{"attr": "thing.s", "op": "between", "value": ["a", "a"]},
				{"attr": "env.hour", "op": "between", "value": [0, 23]}]}`),
			with(func(p *Policy) {
				p.When = &Condition{All: []Condition{
					{Attr: "thing.floor", Op: OpEq, Value: 0.0},
					{Attr: "thing.name", Op: OpEq, Value: ""},
					{Attr: "thing.ok", Op: OpEq, Value: false},
					{Attr: "thing.x", Op: OpBetween, Value: []any{-1500.0, 200.0}},
					{Attr: "thing.s", Op: OpBetween, Value: []any{"a", "a"}},
					{Attr: "env.hour", Op: OpBetween, Value: []any{0.0, 23.0}},
				}}
			})},
		{"id of 128 characters", doc("id", `"`+strings.Repeat("é", 128)+`"`),
			with(func(p *Policy) { p.ID = strings.Repeat("é", 128) })},
		{"trailing whitespace", doc() + " \n\t", base()},
		{"constraint values at the limits", doc("constraints", `[
				{"kind": "accuracy", "field": "position.fix.hdop", "step": 1e-15},
				{"kind": "accuracy", "field": "t", "step": 0.30000000000000001},
				{"kind": "geo", "lat": "pos.lat", "lon": "pos.lon", "meters": 1e-3},
				{"kind": "range", "field": "a.b", "min": -1e308},
				{"kind": "fields", "drop": ["a-b", "a b", "_"]},
				{"kind": "pseudonymize", "field": "meta.user.id"},
				{"kind": "rate", "seconds": 9e9}]`),
			with(func(p *Policy) {
				p.Constraints = []Constraint{
					{Kind: ConstraintAccuracy, Field: "position.fix.hdop", Step: 1e-15},
					{Kind: ConstraintAccuracy, Field: "t", Step: 0.3},
					{Kind: ConstraintGeo, Lat: "pos.lat", Lon: "pos.lon", Meters: 1e-3},
					{Kind: ConstraintRange, Field: "a.b", Min: ptr(-1e308)},
					{Kind: ConstraintFields, Drop: []string{"a-b", "a b", "_"}},
					{Kind: ConstraintPseudonymize, Field: "meta.user.id"},
					{Kind: ConstraintRate, Seconds: 9e9},
				}
			})},
		{"shortest rate", doc("constraints", `[{"kind": "rate", "seconds": 1e-9}]`),
			with(func(p *Policy) { p.Constraints = []Constraint{{Kind: ConstraintRate, Seconds: 1e-9}} })},
	}
}

func TestParsePolicyValid(t *testing.T) {
	for _, tt := range validPolicyCases() {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePolicy([]byte(tt.doc))
			if err != nil {
				t.Fatalf("ParsePolicy: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %#v\nwant %#v", got, tt.want)
			}
			roundTrip(t, got)
		})
	}
}

// nest wraps a leaf condition in n "not" levels.
func nest(n int) string {
	return strings.Repeat(`{"not": `, n) + `{"attr": "env.hour", "op": "eq", "value": 1}` + strings.Repeat("}", n)
}

func TestParsePolicyConditionDepth(t *testing.T) {
	if _, err := ParsePolicy([]byte(doc("when", nest(maxConditionDepth-1)))); err != nil {
		t.Fatalf("%d levels: %v", maxConditionDepth, err)
	}
	_, err := ParsePolicy([]byte(doc("when", nest(maxConditionDepth))))
	want := "when" + strings.Repeat(".not", maxConditionDepth) + ": conditions nested too deeply"
	if got := problems(t, err); !slices.Equal(got, []string{want}) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestParsePolicyErrors(t *testing.T) {
	const attrForms = "(want requester.{key}, thing.{key}, data.{thing}.{stream}.{field}, env.hour, env.weekday, env.time, request.purpose or request.action)"
	const subjectForms = "(want *, user:{name}, thing:{id}, role:{value}, relation:{owner|co_owner|installer|visitor} or a userset {type}:{id}#{relation})"
	const between = "must be an array of 2 numbers or 2 strings"
	cond := func(c string) string { return doc("when", c) }
	cons := func(c string) string { return doc("constraints", "["+c+"]") }
	tests := []struct {
		name string
		doc  string
		want []string
	}{
		// The document as a whole.
		{"empty", ``, []string{"must be a JSON object"}},
		{"array", `[]`, []string{"must be a JSON object"}},
		{"string", `"policy"`, []string{"must be a JSON object"}},
		{"null", `null`, []string{"must be a JSON object"}},
		{"syntax", `{"id": }`, []string{"invalid JSON at byte 7: invalid character '}' looking for beginning of value"}},
		{"truncated", `{"id": "p1"`, []string{"invalid JSON: unexpected end of input"}},
		{"broken after a duplicate", `{"id": "p1", "id": "p2" "priority": 1}`,
			[]string{"invalid JSON at byte 24: invalid character '\"' after object key:value pair"}},
		{"trailing garbage", doc() + ` x`, []string{"unexpected data after the JSON object"}},
		{"second object", doc() + `{}`, []string{"unexpected data after the JSON object"}},
		{"unknown field", doc("foo", `1`), []string{"foo: unknown field"}},
		{"odd unknown key", doc("a.b c", `1`), []string{`["a.b c"]: unknown field`}},
		{"duplicate key", `{"id": "p1", "id": "p2", "priority": 1, "effect": "allow", "subjects": ["*"], "resources": ["#"], "actions": ["read"]}`,
			[]string{"id: duplicate key"}},
		{"nested duplicate key", cons(`{"kind": "rate", "seconds": 1, "seconds": 2}`), []string{"constraints[0].seconds: duplicate key"}},

		// id
		{"id missing", doc("id", ""), []string{"id: is required"}},
		{"id not a string", doc("id", `7`), []string{"id: must be a string"}},
		{"id empty", doc("id", `""`), []string{"id: must not be empty"}},
		{"id too long", doc("id", `"`+strings.Repeat("a", 129)+`"`), []string{"id: must be at most 128 characters"}},
		{"id slash", doc("id", `"a/b"`), []string{"id: must not contain '/', '+', '#', NUL or whitespace"}},
		{"id plus", doc("id", `"a+"`), []string{"id: must not contain '/', '+', '#', NUL or whitespace"}},
		{"id hash", doc("id", `"#"`), []string{"id: must not contain '/', '+', '#', NUL or whitespace"}},
		{"id NUL", doc("id", `"a\u0000"`), []string{"id: must not contain '/', '+', '#', NUL or whitespace"}},
		{"id space", doc("id", `"my policy"`), []string{"id: must not contain '/', '+', '#', NUL or whitespace"}},
		{"id tab", doc("id", `"a\t"`), []string{"id: must not contain '/', '+', '#', NUL or whitespace"}},

		// description, priority, effect
		{"description not a string", doc("description", `null`), []string{"description: must be a string"}},
		{"priority missing", doc("priority", ""), []string{"priority: is required"}},
		{"priority string", doc("priority", `"10"`), []string{"priority: must be an integer"}},
		{"priority fraction", doc("priority", `1.5`), []string{"priority: must be an integer"}},
		{"priority exponent", doc("priority", `1e2`), []string{"priority: must be an integer"}},
		{"priority too large", doc("priority", `2147483648`), []string{"priority: must be between -2147483648 and 2147483647"}},
		{"effect missing", doc("effect", ""), []string{"effect: is required"}},
		{"effect unknown", doc("effect", `"permit"`), []string{`effect: unknown effect "permit" (want allow or deny)`}},
		{"effect not a string", doc("effect", `true`), []string{"effect: must be a string"}},

		// subjects
		{"subjects missing", doc("subjects", ""), []string{"subjects: is required"}},
		{"subjects empty", doc("subjects", `[]`), []string{"subjects: must not be empty"}},
		{"subjects not an array", doc("subjects", `"user:ruth"`), []string{"subjects: must be an array"}},
		{"subject empty string", doc("subjects", `["*", ""]`), []string{"subjects[1]: must not be empty"}},
		{"subject not a string", doc("subjects", `[1]`), []string{"subjects[0]: must be a string"}},
		{"subject bare name", doc("subjects", `["ruth"]`), []string{`subjects[0]: invalid subject "ruth" ` + subjectForms}},
		{"subject empty name", doc("subjects", `["user:"]`), []string{`subjects[0]: invalid subject "user:" ` + subjectForms}},
		{"subject unknown type", doc("subjects", `["group:x"]`), []string{`subjects[0]: invalid subject "group:x" ` + subjectForms}},
		{"subject unknown relation", doc("subjects", `["relation:friend"]`),
			[]string{`subjects[0]: unknown relation "friend" (want owner, co_owner, installer or visitor)`}},
		{"userset no relation", doc("subjects", `["org:acme#"]`), []string{`subjects[0]: invalid subject "org:acme#" ` + subjectForms}},
		{"userset no id", doc("subjects", `["org:#member"]`), []string{`subjects[0]: invalid subject "org:#member" ` + subjectForms}},
		{"userset no type", doc("subjects", `[":acme#member"]`), []string{`subjects[0]: invalid subject ":acme#member" ` + subjectForms}},
		{"userset whitespace", doc("subjects", `["org:ac me#member"]`), []string{`subjects[0]: invalid subject "org:ac me#member" ` + subjectForms}},
		{"userset two hashes", doc("subjects", `["org:acme#a#b"]`), []string{`subjects[0]: invalid subject "org:acme#a#b" ` + subjectForms}},
		{"userset of a role", doc("subjects", `["role:doctor#member"]`), []string{`subjects[0]: invalid subject "role:doctor#member" ` + subjectForms}},

		// resources
		{"resources missing", doc("resources", ""), []string{"resources: is required"}},
		{"resources empty", doc("resources", `[]`), []string{"resources: must not be empty"}},
		{"resource empty string", doc("resources", `[""]`), []string{"resources[0]: must not be empty"}},
		{"resource bad filter", doc("resources", `["things/#/data"]`), []string{"resources[0]: not a valid MQTT topic filter"}},
		{"resource bad plus", doc("resources", `["things/lamp+/data"]`), []string{"resources[0]: not a valid MQTT topic filter"}},
		{"stream empty", doc("resources", `["stream:"]`),
			[]string{`resources[0]: invalid stream "stream:" (want stream:{name}, name non-empty without '/', '+' or '#')`}},
		{"stream with slash", doc("resources", `["stream:a/b"]`),
			[]string{`resources[0]: invalid stream "stream:a/b" (want stream:{name}, name non-empty without '/', '+' or '#')`}},

		// actions, purposes
		{"actions missing", doc("actions", ""), []string{"actions: is required"}},
		{"actions empty", doc("actions", `[]`), []string{"actions: must not be empty"}},
		{"action unknown", doc("actions", `["read", "publish", "write"]`), []string{`actions[2]: unknown action "write"`}},
		{"action not a string", doc("actions", `[null]`), []string{"actions[0]: must be a string"}},
		{"purposes empty", doc("purposes", `[]`), []string{"purposes: must not be empty"}},
		{"purpose empty string", doc("purposes", `["care", ""]`), []string{"purposes[1]: must not be empty"}},
		{"purposes not an array", doc("purposes", `"care"`), []string{"purposes: must be an array"}},

		// when: structure
		{"when not an object", cond(`[]`), []string{"when: must be an object"}},
		{"when empty", cond(`{}`), []string{"when: must be a composite condition (all, any or not) or a simple one (attr, op and value or ref)"}},
		{"when unknown field", cond(`{"attr": "env.hour", "op": "eq", "value": 1, "val": 2}`), []string{"when.val: unknown field"}},
		{"unknown operator", cond(`{"all": [{"attr": "requester.org", "op": "equals", "value": "acme"}]}`),
			[]string{`when.all[0].op: unknown operator "equals" (want eq, ne, lt, le, gt, ge, in, between, prefix, contains)`}},
		{"all empty", cond(`{"all": []}`), []string{"when.all: must not be empty"}},
		{"any not an array", cond(`{"any": {}}`), []string{"when.any: must be an array"}},
		{"not not an object", cond(`{"not": []}`), []string{"when.not: must be an object"}},
		{"two composites", cond(`{"all": [` + nest(0) + `], "not": ` + nest(0) + `}`), []string{"when: only one of all, any or not may be set"}},
		{"composite with attr", cond(`{"all": [` + nest(0) + `], "attr": "env.hour"}`), []string{"when.attr: not allowed in a composite condition"}},
		{"attr missing", cond(`{"op": "eq", "value": 1}`), []string{"when.attr: is required"}},
		{"op missing", cond(`{"attr": "env.hour", "value": 1}`), []string{"when.op: is required"}},
		{"op not a string", cond(`{"attr": "env.hour", "op": 1, "value": 1}`), []string{"when.op: must be a string"}},
		{"value and ref", cond(`{"attr": "thing.a", "op": "eq", "value": 1, "ref": "thing.b"}`), []string{"when: only one of value or ref may be set"}},
		{"neither value nor ref", cond(`{"attr": "thing.a", "op": "eq"}`), []string{"when: one of value or ref is required"}},
		{"ref with in", cond(`{"attr": "thing.a", "op": "in", "ref": "thing.b"}`), []string{`when.ref: not allowed with operator "in"`}},
		{"ref with between", cond(`{"attr": "thing.a", "op": "between", "ref": "thing.b"}`), []string{`when.ref: not allowed with operator "between"`}},
		{"ref not a string", cond(`{"attr": "thing.a", "op": "eq", "ref": 1}`), []string{"when.ref: must be a string"}},

		// when: attribute paths
		{"attr unknown namespace", cond(`{"attr": "user.role", "op": "eq", "value": "x"}`),
			[]string{`when.attr: invalid attribute path "user.role" ` + attrForms}},
		{"attr empty key", cond(`{"attr": "requester.", "op": "eq", "value": "x"}`),
			[]string{`when.attr: invalid attribute path "requester." ` + attrForms}},
		{"attr data too short", cond(`{"attr": "data.watch-1.heart", "op": "eq", "value": 1}`),
			[]string{`when.attr: invalid attribute path "data.watch-1.heart" ` + attrForms}},
		{"attr data empty part", cond(`{"attr": "data.watch-1..rate", "op": "eq", "value": 1}`),
			[]string{`when.attr: invalid attribute path "data.watch-1..rate" ` + attrForms}},
		{"attr data wildcard thing", cond(`{"attr": "data.+.heart.rate", "op": "eq", "value": 1}`),
			[]string{`when.attr: invalid attribute path "data.+.heart.rate" ` + attrForms}},
		{"attr unknown env", cond(`{"attr": "env.minute", "op": "eq", "value": 1}`),
			[]string{`when.attr: invalid attribute path "env.minute" ` + attrForms}},
		{"attr unknown request", cond(`{"attr": "request.topic", "op": "eq", "value": "x"}`),
			[]string{`when.attr: invalid attribute path "request.topic" ` + attrForms}},
		{"ref invalid", cond(`{"attr": "thing.a", "op": "eq", "ref": "b"}`),
			[]string{`when.ref: invalid attribute path "b" ` + attrForms}},

		// when: value typing
		{"eq array", cond(`{"attr": "thing.a", "op": "eq", "value": [1]}`), []string{"when.value: must be a string, number or boolean"}},
		{"ne null", cond(`{"attr": "thing.a", "op": "ne", "value": null}`), []string{"when.value: must be a string, number or boolean"}},
		{"lt bool", cond(`{"attr": "thing.a", "op": "lt", "value": true}`), []string{"when.value: must be a number or a string"}},
		{"ge object", cond(`{"attr": "thing.a", "op": "ge", "value": {}}`), []string{"when.value: must be a number or a string"}},
		{"in not an array", cond(`{"attr": "thing.a", "op": "in", "value": 1}`), []string{"when.value: must be an array"}},
		{"in empty", cond(`{"attr": "thing.a", "op": "in", "value": []}`), []string{"when.value: must not be empty"}},
		{"in nested array", cond(`{"attr": "thing.a", "op": "in", "value": [1, [2]]}`), []string{"when.value[1]: must be a string, number or boolean"}},
		{"between one", cond(`{"attr": "thing.a", "op": "between", "value": [1]}`), []string{"when.value: " + between}},
		{"between three", cond(`{"attr": "thing.a", "op": "between", "value": [1, 2, 3]}`), []string{"when.value: " + between}},
		{"between mixed", cond(`{"attr": "thing.a", "op": "between", "value": [1, "2"]}`), []string{"when.value: " + between}},
		{"between bools", cond(`{"attr": "thing.a", "op": "between", "value": [false, true]}`), []string{"when.value: " + between}},
		{"between reversed", cond(`{"attr": "thing.a", "op": "between", "value": [5, 1]}`), []string{"when.value: lower bound must be <= upper bound"}},
		{"between reversed strings", cond(`{"attr": "thing.a", "op": "between", "value": ["b", "a"]}`), []string{"when.value: lower bound must be <= upper bound"}},
		{"prefix number", cond(`{"attr": "thing.a", "op": "prefix", "value": 5}`), []string{"when.value: must be a string"}},
		{"contains bool", cond(`{"attr": "thing.a", "op": "contains", "value": true}`), []string{"when.value: must be a string"}},
		{"number out of range", cond(`{"attr": "thing.a", "op": "eq", "value": 1e400}`), []string{"when.value: must be a string, number or boolean"}},

		// when: environment attributes
		{"hour above 23", cond(`{"attr": "env.hour", "op": "between", "value": [8, 24]}`), []string{"when.value[1]: must be an hour, an integer from 0 to 23"}},
		{"hour negative", cond(`{"attr": "env.hour", "op": "between", "value": [-1, 8]}`), []string{"when.value[0]: must be an hour, an integer from 0 to 23"}},
		{"hour fraction", cond(`{"attr": "env.hour", "op": "eq", "value": 7.5}`), []string{"when.value: must be an hour, an integer from 0 to 23"}},
		{"hour string", cond(`{"attr": "env.hour", "op": "in", "value": [8, "9"]}`), []string{"when.value[1]: must be an hour, an integer from 0 to 23"}},
		{"hour prefix", cond(`{"attr": "env.hour", "op": "prefix", "value": "1"}`),
			[]string{`when.op: operator "prefix" does not apply to env.hour`, "when.value: must be an hour, an integer from 0 to 23"}},
		{"weekday capitalised", cond(`{"attr": "env.weekday", "op": "eq", "value": "Monday"}`),
			[]string{"when.value: must be a lowercase English day name (monday … sunday)"}},
		{"weekday between", cond(`{"attr": "env.weekday", "op": "between", "value": ["monday", "tuesday"]}`),
			[]string{`when.op: operator "between" does not apply to env.weekday (want eq, ne or in)`}},
		{"time one-digit hour", cond(`{"attr": "env.time", "op": "between", "value": ["8:00", "18:00"]}`),
			[]string{`when.value[0]: must be a time of day "HH:MM" (00:00 to 23:59)`}},
		{"time 24:00", cond(`{"attr": "env.time", "op": "lt", "value": "24:00"}`),
			[]string{`when.value: must be a time of day "HH:MM" (00:00 to 23:59)`}},
		{"time minutes", cond(`{"attr": "env.time", "op": "eq", "value": "12:60"}`),
			[]string{`when.value: must be a time of day "HH:MM" (00:00 to 23:59)`}},
		{"request action", cond(`{"attr": "request.action", "op": "in", "value": ["read", "write"]}`),
			[]string{"when.value[1]: must be an action (publish, read, command, history or configure)"}},

		// constraints
		{"constraints not an array", doc("constraints", `{}`), []string{"constraints: must be an array"}},
		{"constraint not an object", cons(`"accuracy"`), []string{"constraints[0]: must be an object"}},
		{"kind missing", cons(`{"field": "t", "step": 1}`), []string{"constraints[0].kind: is required"}},
		{"kind unknown", cons(`{"kind": "blur", "field": "t"}`),
			[]string{`constraints[0].kind: unknown kind "blur" (want accuracy, geo, range, fields, pseudonymize or rate)`}},
		{"kind unknown with unknown field", cons(`{"kind": "blur", "radius": 1}`),
			[]string{`constraints[0].kind: unknown kind "blur" (want accuracy, geo, range, fields, pseudonymize or rate)`, "constraints[0].radius: unknown field"}},
		{"key of another kind", cons(`{"kind": "accuracy", "field": "t", "step": 1, "meters": 5}`),
			[]string{"constraints[0].meters: not allowed for kind accuracy"}},
		{"constraint unknown field", cons(`{"kind": "rate", "seconds": 1, "burst": 2}`), []string{"constraints[0].burst: unknown field"}},
		{"accuracy step zero", cons(`{"kind": "accuracy", "field": "lat", "step": 0.01}, {"kind": "accuracy", "field": "lon", "step": 0}`),
			[]string{"constraints[1].step: must be > 0"}},
		{"accuracy step negative", cons(`{"kind": "accuracy", "field": "lat", "step": -1}`), []string{"constraints[0].step: must be > 0"}},
		{"accuracy step string", cons(`{"kind": "accuracy", "field": "lat", "step": "1"}`), []string{"constraints[0].step: must be a number"}},
		{"accuracy step missing", cons(`{"kind": "accuracy", "field": "lat"}`), []string{"constraints[0].step: is required"}},
		{"accuracy field missing", cons(`{"kind": "accuracy", "step": 1}`), []string{"constraints[0].field: is required"}},
		{"accuracy field empty", cons(`{"kind": "accuracy", "field": "", "step": 1}`), []string{"constraints[0].field: must not be empty"}},
		{"step out of range", cons(`{"kind": "accuracy", "field": "t", "step": 1e999}`), []string{"constraints[0].step: number out of range"}},
		{"geo lon missing", cons(`{"kind": "geo", "lat": "lat", "meters": 100}`), []string{"constraints[0].lon: is required"}},
		{"geo meters zero", cons(`{"kind": "geo", "lat": "lat", "lon": "lon", "meters": 0}`), []string{"constraints[0].meters: must be > 0"}},
		{"geo with field", cons(`{"kind": "geo", "lat": "lat", "lon": "lon", "meters": 1, "field": "x"}`),
			[]string{"constraints[0].field: not allowed for kind geo"}},
		{"range without bounds", cons(`{"kind": "range", "field": "t"}`), []string{"constraints[0]: one of min or max is required"}},
		{"range min above max", cons(`{"kind": "range", "field": "t", "min": 10, "max": 5}`), []string{"constraints[0].min: must be <= max"}},
		{"range min not a number", cons(`{"kind": "range", "field": "t", "min": "1"}`), []string{"constraints[0].min: must be a number"}},
		{"fields both", cons(`{"kind": "fields", "keep": ["a"], "drop": ["b"]}`), []string{"constraints[0]: only one of keep or drop may be set"}},
		{"fields neither", cons(`{"kind": "fields"}`), []string{"constraints[0]: one of keep or drop is required"}},
		{"fields keep empty", cons(`{"kind": "fields", "keep": []}`), []string{"constraints[0].keep: must not be empty"}},
		{"fields drop empty name", cons(`{"kind": "fields", "drop": ["a", ""]}`), []string{"constraints[0].drop[1]: must not be empty"}},
		{"fields keep not strings", cons(`{"kind": "fields", "keep": [1]}`), []string{"constraints[0].keep[0]: must be a string"}},
		{"pseudonymize field missing", cons(`{"kind": "pseudonymize"}`), []string{"constraints[0].field: is required"}},

		// constraints: what NewView would refuse to compile
		{"keep dotted name", cons(`{"kind": "fields", "keep": ["temperature", "position.lat"]}`),
			[]string{"constraints[0].keep[1]: must be a top-level field name (no dots)"}},
		{"drop dotted names", cons(`{"kind": "fields", "drop": [".a", "b", "c."]}`),
			[]string{"constraints[0].drop[0]: must be a top-level field name (no dots)", "constraints[0].drop[2]: must be a top-level field name (no dots)"}},
		{"accuracy empty segment", cons(`{"kind": "accuracy", "field": "a..b", "step": 1}`),
			[]string{`constraints[0].field: invalid field path "a..b": empty segment (want names joined by single dots, like position.lat)`}},
		{"geo leading dot", cons(`{"kind": "geo", "lat": ".a", "lon": "lon", "meters": 10}`),
			[]string{`constraints[0].lat: invalid field path ".a": empty segment (want names joined by single dots, like position.lat)`}},
		{"geo trailing dot", cons(`{"kind": "geo", "lat": "lat", "lon": "pos.", "meters": 10}`),
			[]string{`constraints[0].lon: invalid field path "pos.": empty segment (want names joined by single dots, like position.lat)`}},
		{"range only a dot", cons(`{"kind": "range", "field": ".", "max": 1}`),
			[]string{`constraints[0].field: invalid field path ".": empty segment (want names joined by single dots, like position.lat)`}},
		{"pseudonymize empty segment", cons(`{"kind": "pseudonymize", "field": "meta..user"}`),
			[]string{`constraints[0].field: invalid field path "meta..user": empty segment (want names joined by single dots, like position.lat)`}},
		{"accuracy float artefact step", cons(`{"kind": "accuracy", "field": "t", "step": 0.30000000000000004}`),
			[]string{"constraints[0].step: must have at most 15 decimals (has 17)"}},
		{"accuracy step too fine", cons(`{"kind": "accuracy", "field": "t", "step": 1e-16}`),
			[]string{"constraints[0].step: must have at most 15 decimals (has 16)"}},
		{"geo lat equals lon", cons(`{"kind": "geo", "lat": "pos", "lon": "pos", "meters": 10}`),
			[]string{"constraints[0].lon: must differ from lat"}},
		{"rate below a nanosecond", cons(`{"kind": "rate", "seconds": 1e-12}`),
			[]string{"constraints[0].seconds: too short: rounds to zero nanoseconds"}},
		{"rate beyond a Duration", cons(`{"kind": "rate", "seconds": 1e10}`),
			[]string{"constraints[0].seconds: too long: must be below about 292 years (9.2e9 seconds)"}},
		{"rate seconds zero", cons(`{"kind": "rate", "seconds": 0}`), []string{"constraints[0].seconds: must be > 0"}},
		{"two rates", cons(`{"kind": "rate", "seconds": 1}, {"kind": "pseudonymize", "field": "p"}, {"kind": "rate", "seconds": 2}`),
			[]string{"constraints[2]: at most one rate constraint is allowed"}},
		{"deny with constraints", doc("effect", `"deny"`, "constraints", `[{"kind": "rate", "seconds": 1}]`),
			[]string{"constraints: only allow policies may have constraints"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePolicy([]byte(tt.doc))
			if err == nil {
				t.Fatalf("no error; parsed %#v", p)
			}
			if !reflect.DeepEqual(p, Policy{}) {
				t.Errorf("on error the policy is %#v, want the zero value", p)
			}
			if got := problems(t, err); !slices.Equal(got, tt.want) {
				t.Fatalf("problems\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestParsePolicyReportsAllProblems(t *testing.T) {
	d := doc("id", `"a/b"`, "actions", `["read", "write"]`,
		"constraints", `[{"kind": "accuracy", "field": "lat", "step": 0.01}, {"kind": "accuracy", "field": "lon", "step": 0}]`)
	_, err := ParsePolicy([]byte(d))
	want := []string{
		"id: must not contain '/', '+', '#', NUL or whitespace",
		`actions[1]: unknown action "write"`,
		"constraints[1].step: must be > 0",
	}
	if got := problems(t, err); !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if msg := err.Error(); msg != strings.Join(want, "; ") {
		t.Fatalf("Error() = %q", msg)
	}
}

func TestParsePolicyDuplicateKeyStillChecksTheRest(t *testing.T) {
	d := `{"id": "p1", "priority": 1, "priority": 2, "effect": "allow", "subjects": ["*"], "resources": ["#"], "actions": ["write"]} []`
	_, err := ParsePolicy([]byte(d))
	want := []string{"priority: duplicate key", "unexpected data after the JSON object", `actions[0]: unknown action "write"`}
	if got := problems(t, err); !slices.Equal(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

func TestParsePolicySize(t *testing.T) {
	// Pad the description so the document is exactly at the limit: accepted.
	pad := func(total int) []byte {
		d := doc("description", `""`)
		return []byte(doc("description", `"`+strings.Repeat("x", total-len(d))+`"`))
	}
	if d := pad(maxPolicySize); len(d) != maxPolicySize {
		t.Fatalf("test bug: %d bytes", len(d))
	} else if _, err := ParsePolicy(d); err != nil {
		t.Fatalf("document of exactly %d bytes: %v", maxPolicySize, err)
	}
	_, err := ParsePolicy(pad(maxPolicySize + 1))
	want := []string{"document too large (65537 bytes, max 65536)"}
	if got := problems(t, err); !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestParsePolicyDeepJSON(t *testing.T) {
	// Deep nesting anywhere is refused without deep recursion.
	d := doc("description", strings.Repeat("[", 10000)+strings.Repeat("]", 10000))
	_, err := ParsePolicy([]byte(d))
	got := problems(t, err)
	if len(got) != 1 || !strings.HasSuffix(got[0], "JSON nested too deeply (max 144 levels)") ||
		!strings.HasPrefix(got[0], "description[0][0]") {
		t.Fatalf("got %q", got)
	}
}

// TestParsePolicyFixtures checks the documents under testdata/policies:
// valid/*.json must parse and round-trip; each invalid/NAME.json must fail
// with exactly the problems listed one per line in invalid/NAME.errors.
func TestParsePolicyFixtures(t *testing.T) {
	valid, _ := filepath.Glob("testdata/policies/valid/*.json")
	invalid, _ := filepath.Glob("testdata/policies/invalid/*.json")
	if len(valid) == 0 || len(invalid) == 0 {
		t.Fatal("no fixtures found")
	}
	for _, path := range valid {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			p, err := ParsePolicy(data)
			if err != nil {
				t.Fatalf("ParsePolicy: %v", err)
			}
			roundTrip(t, p)
		})
	}
	for _, path := range invalid {
		t.Run(filepath.Base(path), func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			golden, err := os.ReadFile(strings.TrimSuffix(path, ".json") + ".errors")
			if err != nil {
				t.Fatal(err)
			}
			want := strings.Split(strings.TrimRight(string(golden), "\n"), "\n")
			_, err = ParsePolicy(data)
			if err == nil {
				t.Fatal("no error")
			}
			if got := problems(t, err); !slices.Equal(got, want) {
				t.Fatalf("problems\n got %q\nwant %q", got, want)
			}
		})
	}
}

func TestDecodeRoundTripKeepsFloats(t *testing.T) {
	// Values that print differently from how they were written still parse
	// back equal: 1E2 → 100, 0.1 stays the nearest float64, -0 stays zero.
	d := doc("when", `{"attr": "thing.a", "op": "in", "value": [1E2, 0.1, -0, 1e-320, 1.7976931348623157e308]}`,
		"constraints", `[{"kind": "range", "field": "t", "min": -0.0}]`)
	p, err := ParsePolicy([]byte(d))
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, p)
}

func TestParseTime(t *testing.T) {
	for _, s := range []string{
		"2025-06-01T18:00:00Z",
		"2025-06-01T18:00:00+02:00",
		"2025-06-01T18:00:00.123456789-07:30",
	} {
		got, err := ParseTime(s)
		if err != nil {
			t.Errorf("ParseTime(%q): %v", s, err)
			continue
		}
		if want, _ := time.Parse(time.RFC3339Nano, s); !got.Equal(want) {
			t.Errorf("ParseTime(%q) = %v, want %v", s, got, want)
		}
	}
	if got, _ := ParseTime("2025-06-01T18:00:00.5Z"); got.Nanosecond() != 500000000 {
		t.Errorf("fraction lost: %v", got)
	}
	for _, s := range []string{"", "2025-06-01", "2025-06-01 18:00:00Z", "2025-06-01T18:00:00", "tomorrow", "2025-13-01T00:00:00Z"} {
		_, err := ParseTime(s)
		if err == nil || err.Error() != "not an RFC 3339 time" {
			t.Errorf("ParseTime(%q) error = %v, want \"not an RFC 3339 time\"", s, err)
		}
	}
}

// TestDecodedConstraintsCompile keeps the decoder and NewView from drifting
// apart: whatever constraints ParsePolicy accepts, in the valid fixtures
// and in every valid row above, NewView must compile.
func TestDecodedConstraintsCompile(t *testing.T) {
	docs := map[string]string{}
	fixtures, _ := filepath.Glob("testdata/policies/valid/*.json")
	if len(fixtures) == 0 {
		t.Fatal("no fixtures found")
	}
	for _, path := range fixtures {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		docs[filepath.Base(path)] = string(data)
	}
	for _, c := range validPolicyCases() {
		docs[c.name] = c.doc
	}
	compiled := 0
	for name, d := range docs {
		p, err := ParsePolicy([]byte(d))
		if err != nil {
			t.Errorf("%s: ParsePolicy: %v", name, err)
			continue
		}
		if len(p.Constraints) == 0 {
			continue
		}
		if _, err := NewView(testKey, p.Constraints); err != nil {
			t.Errorf("%s: ParsePolicy accepts constraints NewView refuses: %v", name, err)
		}
		compiled++
	}
	if compiled < 4 {
		t.Errorf("only %d documents with constraints", compiled)
	}
}

// FuzzDecodedConstraintCompiles searches for constraint values ParsePolicy
// accepts and NewView refuses. Each input becomes one constraint of kind
// with a, b as its names, x, y as its numbers and names split at commas as
// its keep (or drop, when b is non-empty) list.
func FuzzDecodedConstraintCompiles(f *testing.F) {
	for _, kind := range []string{ConstraintAccuracy, ConstraintGeo, ConstraintRange, ConstraintFields, ConstraintPseudonymize, ConstraintRate} {
		f.Add(kind, "pos.lat", "pos.lon", 0.01, 40.0, "a,b")
	}
	f.Add(ConstraintAccuracy, "a..b", "", 0.30000000000000004, 0.0, "")
	f.Add(ConstraintRate, "", "", 1e-12, 0.0, "")
	f.Fuzz(func(t *testing.T, kind, a, b string, x, y float64, names string) {
		c := map[string]any{"kind": kind}
		switch kind {
		case ConstraintAccuracy:
			c["field"], c["step"] = a, x
		case ConstraintGeo:
			c["lat"], c["lon"], c["meters"] = a, b, x
		case ConstraintRange:
			c["field"], c["min"], c["max"] = a, x, y
		case ConstraintFields:
			if b == "" {
				c["keep"] = strings.Split(names, ",")
			} else {
				c["drop"] = strings.Split(names, ",")
			}
		case ConstraintPseudonymize:
			c["field"] = a
		case ConstraintRate:
			c["seconds"] = x
		}
		raw, err := json.Marshal(c)
		if err != nil {
			return // NaN or ±Inf: not JSON
		}
		p, err := ParsePolicy([]byte(doc("constraints", "["+string(raw)+"]")))
		if err != nil {
			return
		}
		if _, err := NewView(testKey, p.Constraints); err != nil {
			t.Fatalf("ParsePolicy accepts %s, NewView refuses: %v", raw, err)
		}
	})
}
