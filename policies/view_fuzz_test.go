package policies

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"regexp"
	"strconv"
	"testing"
)

// fuzzView is the fixed view both fuzzers attack: every rewriting kind that
// must never let a raw value through.
func fuzzView(t testing.TB) *View {
	return mustView(t, testKey, accuracy("temperature", 0.5), geo("lat", "lon", 1000), pseudo("user"), drop("secret"))
}

var pseudonymRE = regexp.MustCompile(`^"p_[0-9a-f]{24}"$`)

// FuzzViewApply checks that Apply never panics, that whatever it lets
// through is a compact JSON object with every constraint enforced, and that
// the two-phase path, Render(ParsePayload(x)), gives exactly what Apply(x)
// gives (bytes, or error text) and records an index consistent with
// encoding/json.
func FuzzViewApply(f *testing.F) {
	for _, s := range []string{
		`{"user":"alice","temperature":21.37,"lat":48.7758,"lon":9.1829,"secret":"x"}`,
		`{"user":{"id":7},"temperature":-0,"lat":-90,"lon":180}`,
		`{"user":{"a":1.4,"b":"x"},"temperature":3,"z":1}`,
		" { \"us\\u0065r\" : { \"a\" : [ 1 , { \"b\" : 2 } ] } , \"temperature\" : 1e1 , \"lat\" : 0 , \"lon\" : 0 , \"x\" : \" \" } ",
	} {
		f.Add([]byte(s))
	}
	v := fuzzView(f)
	// nested reaches into objects, rewrites inside a container before
	// pseudonymizing it, and drops: the paths fuzzView does not take.
	nested := mustView(f, testKey, accuracy("user.a", 1), keep("user", "temperature"), pseudo("user"), accuracy("temperature", 0.5))
	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.Clone(data)
		out, err := v.Apply(data)
		if !bytes.Equal(in, data) {
			t.Fatalf("Apply modified its input")
		}
		checkTwoPhase(t, v, data, out, err)
		nout, nerr := nested.Apply(data)
		checkTwoPhase(t, nested, data, nout, nerr)
		if err != nil {
			if !errors.Is(err, ErrWithheld) || out != nil {
				t.Fatalf("Apply error %v (wraps ErrWithheld: %v) with output %q", err, errors.Is(err, ErrWithheld), out)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("invalid JSON output %q for %q", out, data)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, out); err != nil || !bytes.Equal(compact.Bytes(), out) {
			t.Fatalf("output not compact: %q", out)
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(out, &obj); err != nil {
			t.Fatalf("output is not an object: %q: %v", out, err)
		}
		if _, ok := obj["secret"]; ok {
			t.Fatalf("output keeps secret: %q", out)
		}
		temp, err := strconv.ParseFloat(string(obj["temperature"]), 64)
		if err != nil || math.Mod(temp*2, 1) != 0 {
			t.Fatalf("temperature %s is not a multiple of 0.5 (%q)", obj["temperature"], out)
		}
		for _, k := range []string{"lat", "lon"} {
			x, err := strconv.ParseFloat(string(obj[k]), 64)
			dot := bytes.IndexByte(obj[k], '.')
			if err != nil || math.Abs(x) > 180 || bytes.ContainsAny(obj[k], "eE") || dot >= 0 && len(obj[k])-dot-1 > 6 {
				t.Fatalf("%s %s is not a coarse coordinate (%q)", k, obj[k], out)
			}
		}
		if !pseudonymRE.Match(obj["user"]) {
			t.Fatalf("user %s is not a pseudonym (%q)", obj["user"], out)
		}
		// The raw user value must not reappear. Only a value distinctive
		// enough to check: unique in the (compacted) input, and not short or
		// a number that could occur inside a pseudonym's hex by chance.
		var inObj map[string]json.RawMessage
		if json.Unmarshal(data, &inObj) != nil {
			t.Fatalf("Apply accepted what encoding/json rejects: %q", data)
		}
		var raw, whole bytes.Buffer
		if json.Compact(&raw, inObj["user"]) == nil && json.Compact(&whole, data) == nil &&
			raw.Len() >= 4 && bytes.ContainsAny(raw.Bytes()[:1], `"{[`) &&
			bytes.Count(whole.Bytes(), raw.Bytes()) == 1 && bytes.Contains(out, raw.Bytes()) {
			t.Fatalf("raw user %s leaks into %q", raw.Bytes(), out)
		}
	})
}

// FuzzViewApplyAccuracy checks that a number is never passed through as it
// was unless it already is a multiple of the step.
func FuzzViewApplyAccuracy(f *testing.F) {
	for _, s := range []string{
		`{"temperature":21.37}`, `{"temperature":21.5}`, `{"temperature":21.50}`, `{"temperature":-0.0}`,
		`{"temperature":1e2}`, `{"temperature":2.5E-1,"x":[1]}`, `{"temperature":"21.37"}`,
		`{"temperature":12345678901234567890}`, `{"\u0074emperature":0.26}`,
	} {
		f.Add([]byte(s))
	}
	v := mustView(f, testKey, accuracy("temperature", 0.5))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := v.Apply(data)
		checkTwoPhase(t, v, data, out, err)
		if err != nil {
			return
		}
		var in, res map[string]json.RawMessage
		if json.Unmarshal(data, &in) != nil || json.Unmarshal(out, &res) != nil {
			t.Fatalf("Apply(%q) = %q: input or output is not a JSON object", data, out)
		}
		raw, got := in["temperature"], res["temperature"]
		if len(raw) == 0 || !isNumber(raw) {
			t.Fatalf("Apply(%q) accepted a temperature that is not a number: %q", data, out)
		}
		g, err := strconv.ParseFloat(string(got), 64)
		if err != nil || math.Mod(g*2, 1) != 0 {
			t.Fatalf("temperature %s is not a multiple of 0.5", got)
		}
		if bytes.Equal(raw, got) {
			r, _ := strconv.ParseFloat(string(raw), 64)
			if math.Mod(r*2, 1) != 0 {
				t.Fatalf("raw temperature %s passed through", raw)
			}
		}
	})
}
