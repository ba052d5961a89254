package policies

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var testKey = []byte("owner-secret-0123456789abcdef!!")

func f64(x float64) *float64 { return &x }

func accuracy(field string, step float64) Constraint {
	return Constraint{Kind: ConstraintAccuracy, Field: field, Step: step}
}

func geo(lat, lon string, meters float64) Constraint {
	return Constraint{Kind: ConstraintGeo, Lat: lat, Lon: lon, Meters: meters}
}

func rangeC(field string, min, max *float64) Constraint {
	return Constraint{Kind: ConstraintRange, Field: field, Min: min, Max: max}
}

func keep(names ...string) Constraint { return Constraint{Kind: ConstraintFields, Keep: names} }
func drop(names ...string) Constraint { return Constraint{Kind: ConstraintFields, Drop: names} }
func pseudo(field string) Constraint {
	return Constraint{Kind: ConstraintPseudonymize, Field: field}
}
func rate(sec float64) Constraint { return Constraint{Kind: ConstraintRate, Seconds: sec} }

// pseudonym computes the documented pseudonym independently of view.go.
func pseudonym(key []byte, field, canonical string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(field + "\x00" + canonical))
	return `"p_` + hex.EncodeToString(m.Sum(nil)[:12]) + `"`
}

func mustView(t testing.TB, key []byte, cs ...Constraint) *View {
	t.Helper()
	v, err := NewView(key, cs)
	if err != nil {
		t.Fatalf("NewView(%v): %v", cs, err)
	}
	return v
}

type applyCase struct {
	name string
	cs   []Constraint
	in   string
	want string // exact output, when err is empty
	err  string // exact error text, when withheld
}

func runApplyCases(t *testing.T, cases []applyCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := mustView(t, testKey, c.cs...)
			out, err := v.Apply([]byte(c.in))
			checkTwoPhase(t, v, []byte(c.in), out, err)
			if c.err != "" {
				if err == nil {
					t.Fatalf("Apply(%s) = %s, want withheld %q", c.in, out, c.err)
				}
				if !errors.Is(err, ErrWithheld) {
					t.Errorf("error %v does not wrap ErrWithheld", err)
				}
				if err.Error() != c.err {
					t.Errorf("Apply(%s) error = %q, want %q", c.in, err, c.err)
				}
				if out != nil {
					t.Errorf("withheld Apply returned bytes %q", out)
				}
				return
			}
			if err != nil {
				t.Fatalf("Apply(%s): %v", c.in, err)
			}
			if string(out) != c.want {
				t.Errorf("Apply(%s)\n got %s\nwant %s", c.in, out, c.want)
			}
		})
	}
}

func TestViewAccuracy(t *testing.T) {
	runApplyCases(t, []applyCase{
		{name: "thesis 87.5 step 10", cs: []Constraint{accuracy("temperature", 10)},
			in: `{"temperature":87.5}`, want: `{"temperature":90}`},
		{name: "decimal half rounds up despite binary 234.49999", cs: []Constraint{accuracy("temperature", 0.1)},
			in: `{"temperature":23.45}`, want: `{"temperature":23.5}`},
		{name: "negative decimal half rounds away from zero", cs: []Constraint{accuracy("temperature", 0.1)},
			in: `{"temperature":-23.45}`, want: `{"temperature":-23.5}`},
		{name: "just below half rounds down", cs: []Constraint{accuracy("temperature", 0.1)},
			in: `{"temperature":23.4499}`, want: `{"temperature":23.4}`},
		{name: "step 0.1 no float noise", cs: []Constraint{accuracy("temperature", 0.1)},
			in: `{"temperature":21.37}`, want: `{"temperature":21.4}`},
		{name: "step 0.1 integer input gains decimal", cs: []Constraint{accuracy("temperature", 0.1)},
			in: `{"temperature":21}`, want: `{"temperature":21.0}`},
		{name: "step 0.01", cs: []Constraint{accuracy("temperature", 0.01)},
			in: `{"temperature":21.376}`, want: `{"temperature":21.38}`},
		{name: "step 0.01 already coarse", cs: []Constraint{accuracy("temperature", 0.01)},
			in: `{"temperature":21.37}`, want: `{"temperature":21.37}`},
		{name: "step 0.25 down", cs: []Constraint{accuracy("temperature", 0.25)},
			in: `{"temperature":21.37}`, want: `{"temperature":21.25}`},
		{name: "step 0.25 up", cs: []Constraint{accuracy("temperature", 0.25)},
			in: `{"temperature":21.40}`, want: `{"temperature":21.50}`},
		{name: "step 5 half away from zero", cs: []Constraint{accuracy("temperature", 5)},
			in: `{"temperature":87.5}`, want: `{"temperature":90}`},
		{name: "step 5", cs: []Constraint{accuracy("temperature", 5)},
			in: `{"temperature":83}`, want: `{"temperature":85}`},
		{name: "negative step 0.1", cs: []Constraint{accuracy("temperature", 0.1)},
			in: `{"temperature":-21.37}`, want: `{"temperature":-21.4}`},
		{name: "negative step 10", cs: []Constraint{accuracy("temperature", 10)},
			in: `{"temperature":-87.5}`, want: `{"temperature":-90}`},
		{name: "negative to zero has no sign", cs: []Constraint{accuracy("temperature", 0.1)},
			in: `{"temperature":-0.04}`, want: `{"temperature":0.0}`},
		{name: "exponent input", cs: []Constraint{accuracy("temperature", 0.1)},
			in: `{"temperature":2.137E1}`, want: `{"temperature":21.4}`},
		{name: "escaped key matches", cs: []Constraint{accuracy("temperature", 0.1)},
			in: `{"\u0074emperature":21.37}`, want: `{"\u0074emperature":21.4}`},
		{name: "nested path", cs: []Constraint{accuracy("position.lat", 0.01)},
			in: `{"position":{"lat":48.7758,"lon":9.1829},"n":1}`, want: `{"position":{"lat":48.78,"lon":9.1829},"n":1}`},
		{name: "twice in order", cs: []Constraint{accuracy("temperature", 0.1), accuracy("temperature", 10)},
			in: `{"temperature":24.37}`, want: `{"temperature":20}`},
		{name: "twice rounds the rounded value", cs: []Constraint{accuracy("temperature", 0.1), accuracy("temperature", 10)},
			in: `{"temperature":24.97}`, want: `{"temperature":30}`},
		{name: "overflow withheld", cs: []Constraint{accuracy("temperature", 0.5)},
			in: `{"temperature":1.7e308}`, err: "withheld: temperature: number out of range"},
		{name: "beyond float64 withheld", cs: []Constraint{accuracy("temperature", 0.5)},
			in: `{"temperature":1e400}`, err: "withheld: temperature: number out of range"},
		{name: "string", cs: []Constraint{accuracy("temperature", 0.1)},
			in: `{"temperature":"21.37"}`, err: "withheld: temperature: not a number"},
		{name: "null", cs: []Constraint{accuracy("temperature", 0.1)},
			in: `{"temperature":null}`, err: "withheld: temperature: not a number"},
		{name: "object", cs: []Constraint{accuracy("temperature", 0.1)},
			in: `{"temperature":{"v":21.37}}`, err: "withheld: temperature: not a number"},
		{name: "missing", cs: []Constraint{accuracy("temperature", 0.1)},
			in: `{"humidity":40.2}`, err: "withheld: temperature: field missing"},
		{name: "nested missing", cs: []Constraint{accuracy("position.lat", 0.01)},
			in: `{"position":{"lon":9.1829}}`, err: "withheld: position.lat: field missing"},
		{name: "nested parent not an object", cs: []Constraint{accuracy("position.lat", 0.01)},
			in: `{"position":[48.7758]}`, err: "withheld: position.lat: field missing (parent is not an object)"},
	})
}

func TestViewGeo(t *testing.T) {
	// Stuttgart at 1000 m: the latitude step is 1000/111320 = 0.008983°;
	// 48.7758 lies in row 5430 (48.778297), whose longitude step is
	// 0.013632°: 9.1829 lies in column 674 (9.18794). The grid point is
	// about 280 m north and 370 m east of the reading.
	stuttgart := `{"lat":48.7758,"lon":9.1829}`
	snapped := `{"lat":48.778297,"lon":9.18794}`
	runApplyCases(t, []applyCase{
		{name: "stuttgart", cs: []Constraint{geo("lat", "lon", 1000)}, in: stuttgart, want: snapped},
		{name: "same cell", cs: []Constraint{geo("lat", "lon", 1000)},
			in: `{"lat":48.7790,"lon":9.1850}`, want: snapped},
		{name: "neighbour cell", cs: []Constraint{geo("lat", "lon", 1000)},
			in: `{"lat":48.7770,"lon":9.1800}`, want: `{"lat":48.778297,"lon":9.174308}`},
		{name: "other fields and order kept", cs: []Constraint{geo("lat", "lon", 1000)},
			in: `{"id":"w1","lon":9.1829,"acc":3.50,"lat":48.7758}`, want: `{"id":"w1","lon":9.18794,"acc":3.50,"lat":48.778297}`},
		{name: "nested", cs: []Constraint{geo("pos.lat", "pos.lon", 1000)},
			in: `{"pos":{"lat":48.7758,"lon":9.1829}}`, want: `{"pos":` + snapped + `}`},
		{name: "origin", cs: []Constraint{geo("lat", "lon", 1000)},
			in: `{"lat":-0.001,"lon":0.001}`, want: `{"lat":0,"lon":0}`},
		{name: "pole", cs: []Constraint{geo("lat", "lon", 1000)},
			in: `{"lat":89.9999,"lon":179.9999}`, want: `{"lat":90,"lon":0}`},
		{name: "coarse 100 km", cs: []Constraint{geo("lat", "lon", 100000)},
			in: stuttgart, want: `{"lat":48.508803,"lon":9.491519}`},
		{name: "lat above 90", cs: []Constraint{geo("lat", "lon", 1000)},
			in: `{"lat":90.5,"lon":9}`, err: "withheld: lat: latitude out of range"},
		{name: "lon below -180", cs: []Constraint{geo("lat", "lon", 1000)},
			in: `{"lat":48,"lon":-180.5}`, err: "withheld: lon: longitude out of range"},
		{name: "lat string", cs: []Constraint{geo("lat", "lon", 1000)},
			in: `{"lat":"48.7758","lon":9.1829}`, err: "withheld: lat: not a number"},
		{name: "lon bool", cs: []Constraint{geo("lat", "lon", 1000)},
			in: `{"lat":48.7758,"lon":true}`, err: "withheld: lon: not a number"},
		{name: "lon missing", cs: []Constraint{geo("lat", "lon", 1000)},
			in: `{"lat":48.7758}`, err: "withheld: lon: field missing"},
		{name: "lat missing", cs: []Constraint{geo("lat", "lon", 1000)},
			in: `{"lon":9.1829}`, err: "withheld: lat: field missing"},
	})
}

func TestViewRange(t *testing.T) {
	lo, hi := f64(0), f64(50)
	runApplyCases(t, []applyCase{
		{name: "below", cs: []Constraint{rangeC("t", lo, hi)}, in: `{"t":-0.5}`, err: "withheld: t: outside the allowed range"},
		{name: "at min keeps text", cs: []Constraint{rangeC("t", lo, hi)}, in: `{"t":0.00}`, want: `{"t":0.00}`},
		{name: "inside", cs: []Constraint{rangeC("t", lo, hi)}, in: `{"t":21.37}`, want: `{"t":21.37}`},
		{name: "at max", cs: []Constraint{rangeC("t", lo, hi)}, in: `{"t":5e1}`, want: `{"t":5e1}`},
		{name: "above", cs: []Constraint{rangeC("t", lo, hi)}, in: `{"t":50.01}`, err: "withheld: t: outside the allowed range"},
		{name: "min only", cs: []Constraint{rangeC("t", lo, nil)}, in: `{"t":1e300}`, want: `{"t":1e300}`},
		{name: "max only", cs: []Constraint{rangeC("t", nil, hi)}, in: `{"t":-1e300}`, want: `{"t":-1e300}`},
		{name: "max only above", cs: []Constraint{rangeC("t", nil, hi)}, in: `{"t":1e400}`, err: "withheld: t: outside the allowed range"},
		{name: "string", cs: []Constraint{rangeC("t", lo, hi)}, in: `{"t":"20"}`, err: "withheld: t: not a number"},
		{name: "missing", cs: []Constraint{rangeC("t", lo, hi)}, in: `{"u":20}`, err: "withheld: t: field missing"},
		{name: "after accuracy", cs: []Constraint{accuracy("t", 10), rangeC("t", nil, hi)}, in: `{"t":53}`, want: `{"t":50}`},
	})
}

func TestViewFields(t *testing.T) {
	in := `{"ts":"2026-11-25T21:00:00Z","temperature":21.37,"humidity":40.2,"secret":"x"}`
	runApplyCases(t, []applyCase{
		{name: "keep", cs: []Constraint{keep("temperature", "ts", "absent")}, in: in,
			want: `{"ts":"2026-11-25T21:00:00Z","temperature":21.37}`},
		{name: "keep none present", cs: []Constraint{keep("absent")}, in: in, want: `{}`},
		{name: "drop", cs: []Constraint{drop("secret", "humidity")}, in: in,
			want: `{"ts":"2026-11-25T21:00:00Z","temperature":21.37}`},
		{name: "drop first", cs: []Constraint{drop("ts")}, in: in,
			want: `{"temperature":21.37,"humidity":40.2,"secret":"x"}`},
		{name: "drop absent", cs: []Constraint{drop("absent")}, in: `{"a":1}`, want: `{"a":1}`},
		{name: "drop escaped key", cs: []Constraint{drop("secret")}, in: `{"a":1,"secr\u0065t":"x"}`, want: `{"a":1}`},
		{name: "keep escaped key", cs: []Constraint{keep("a")}, in: `{"\u0061":1,"b":2}`, want: `{"\u0061":1}`},
		{name: "top level only", cs: []Constraint{drop("secret")}, in: `{"n":{"secret":1}}`, want: `{"n":{"secret":1}}`},
		{name: "empty object", cs: []Constraint{drop("secret")}, in: ` { } `, want: `{}`},
		{name: "then missing", cs: []Constraint{keep("temperature"), accuracy("humidity", 1)}, in: in,
			err: "withheld: humidity: field missing"},
	})
}

func TestViewPseudonymize(t *testing.T) {
	otherKey := []byte("another-owner-secret")
	alice := pseudonym(testKey, "user", `"alice"`)
	runApplyCases(t, []applyCase{
		{name: "string", cs: []Constraint{pseudo("user")}, in: `{"user":"alice","t":1}`,
			want: `{"user":` + alice + `,"t":1}`},
		{name: "escaped string same value", cs: []Constraint{pseudo("user")}, in: `{"user":"\u0061lice"}`,
			want: `{"user":` + alice + `}`},
		{name: "number canonical", cs: []Constraint{pseudo("id")}, in: `{"id":1000.0}`,
			want: `{"id":` + pseudonym(testKey, "id", "1e3") + `}`},
		{name: "number other spelling", cs: []Constraint{pseudo("id")}, in: `{"id":1e3}`,
			want: `{"id":` + pseudonym(testKey, "id", "1e3") + `}`},
		{name: "object sorted compact", cs: []Constraint{pseudo("who")}, in: `{"who":{ "b":[1.50, "x\n"], "a":null }}`,
			want: `{"who":` + pseudonym(testKey, "who", `{"a":null,"b":[15e-1,"x\n"]}`) + `}`},
		{name: "nested field", cs: []Constraint{pseudo("meta.user")}, in: `{"meta":{"user":"alice"}}`,
			want: `{"meta":{"user":` + pseudonym(testKey, "meta.user", `"alice"`) + `}}`},
		{name: "after accuracy inside", cs: []Constraint{accuracy("p.t", 1), pseudo("p")}, in: `{"p":{"t":21.37}}`,
			want: `{"p":` + pseudonym(testKey, "p", `{"t":21}`) + `}`},
		{name: "then accuracy finds no number", cs: []Constraint{pseudo("t"), accuracy("t", 1)}, in: `{"t":21.37}`,
			err: "withheld: t: not a number"},
		{name: "missing", cs: []Constraint{pseudo("user")}, in: `{"u":"alice"}`, err: "withheld: user: field missing"},
	})

	v1 := mustView(t, testKey, pseudo("user"))
	v2 := mustView(t, otherKey, pseudo("user"))
	a1, _ := v1.Apply([]byte(`{"user":"alice"}`))
	a1again, _ := v1.Apply([]byte(`{ "user" : "alice" }`))
	a2, _ := v2.Apply([]byte(`{"user":"alice"}`))
	b1, _ := v1.Apply([]byte(`{"user":"bob"}`))
	if !bytes.Equal(a1, a1again) {
		t.Errorf("pseudonym not stable: %s vs %s", a1, a1again)
	}
	if bytes.Equal(a1, a2) {
		t.Errorf("pseudonym does not depend on the key: %s", a1)
	}
	if bytes.Equal(a1, b1) {
		t.Errorf("different values share a pseudonym: %s", a1)
	}
	vf := mustView(t, testKey, pseudo("owner"))
	o1, _ := vf.Apply([]byte(`{"owner":"alice"}`))
	if bytes.Contains(o1, a1[len(`{"user":`):len(a1)-1]) {
		t.Errorf("pseudonym does not depend on the field: %s vs %s", o1, a1)
	}
}

func TestViewCanonicalNumbers(t *testing.T) {
	for in, want := range map[string]string{
		`0`: `0`, `-0`: `0`, `0.000`: `0`, `-0.0e5`: `0`, `1`: `1`, `1000`: `1e3`, `1e3`: `1e3`,
		`100.00`: `1e2`, `40.20`: `402e-1`, `0.0012`: `12e-4`, `-21.37`: `-2137e-2`,
		`1.5E+2`: `15e1`, `1050`: `105e1`, `12345678901234567890123`: `12345678901234567890123`,
		`1e-0005`: `1e-5`,
	} {
		got, err := appendCanonicalNumber(nil, []byte(in))
		if err != nil || string(got) != want {
			t.Errorf("canonical(%s) = %s, %v; want %s", in, got, err, want)
		}
	}
	if _, err := appendCanonicalNumber(nil, []byte("1e9999999999999999")); err == nil {
		t.Error("absurd exponent accepted")
	}
}

func TestViewRate(t *testing.T) {
	v := mustView(t, testKey, rate(30))
	if v.Rate() != 30*time.Second {
		t.Errorf("Rate = %v", v.Rate())
	}
	if v.Rewrites() {
		t.Error("a rate-only view rewrites")
	}
	for _, in := range []string{`{"t":21.37}`, `{ "t" : [1, 2] }`} {
		out, err := v.Apply([]byte(in))
		if err != nil || string(out) != in {
			t.Errorf("rate-only Apply(%q) = %q, %v", in, out, err)
		}
	}
	// A delivery under any constraint is of a reading, a JSON object.
	for _, in := range []string{`not json at all`, ``, `[1,2]`, `{"t":1,"t":2}`} {
		if out, err := v.Apply([]byte(in)); !errors.Is(err, ErrWithheld) || out != nil {
			t.Errorf("rate-only Apply(%q) = %q, %v; want withheld", in, out, err)
		}
	}
	if d := mustView(t, testKey, rate(0.5), accuracy("t", 1)).Rate(); d != 500*time.Millisecond {
		t.Errorf("Rate = %v", d)
	}
	if !mustView(t, testKey, accuracy("t", 1), rate(1)).Rewrites() {
		t.Error("accuracy view does not rewrite")
	}
	if r := mustView(t, testKey, accuracy("t", 1)).Rate(); r != 0 {
		t.Errorf("Rate without rate constraint = %v", r)
	}
	empty := mustView(t, testKey)
	if empty.Rewrites() || empty.Rate() != 0 || empty.Key() != "" {
		t.Errorf("empty view: rewrites %v rate %v key %q", empty.Rewrites(), empty.Rate(), empty.Key())
	}
}

func TestViewMultipleInOrder(t *testing.T) {
	cs := []Constraint{
		accuracy("temperature", 0.5),
		geo("lat", "lon", 1000),
		drop("secret"),
		pseudo("user"),
		rangeC("humidity", f64(0), f64(100)),
		rate(10),
	}
	in := `{"user":"alice","temperature":21.37,"secret":"s3cr3t","lat":48.7758,"lon":9.1829,"humidity":40.20,"n":1e3}`
	want := `{"user":` + pseudonym(testKey, "user", `"alice"`) + `,"temperature":21.5,"lat":48.778297,"lon":9.18794,"humidity":40.20,"n":1e3}`
	runApplyCases(t, []applyCase{{name: "all kinds", cs: cs, in: in, want: want}})
	if r := mustView(t, testKey, cs...).Rate(); r != 10*time.Second {
		t.Errorf("Rate = %v", r)
	}
}

func TestViewPreservesText(t *testing.T) {
	runApplyCases(t, []applyCase{
		{name: "untouched scalars keep their text", cs: []Constraint{accuracy("t", 0.1)},
			in:   `{"a":1e3,"b":40.20,"c":-0.0,"d":"\u00e9\n\/","e":[1.0E+2,true,null,{}],"t":21.37,"f":"é"}`,
			want: `{"a":1e3,"b":40.20,"c":-0.0,"d":"\u00e9\n\/","e":[1.0E+2,true,null,{}],"t":21.4,"f":"é"}`},
		{name: "key order kept", cs: []Constraint{accuracy("t", 0.1)},
			in: `{"z":1,"t":21.37,"a":2}`, want: `{"z":1,"t":21.4,"a":2}`},
		{name: "whitespace removed", cs: []Constraint{accuracy("t", 0.1)},
			in:   "\t{ \"t\" : 21.37 ,\n \"x\" : [ 1 , \"a b\" , { \"k\" : \" v \" } ] }\r\n",
			want: `{"t":21.4,"x":[1,"a b",{"k":" v "}]}`},
		{name: "many keys", cs: []Constraint{accuracy("k0", 1)}, in: manyKeys(40, false), want: manyKeys(40, false)},
	})
}

// manyKeys renders {"k0":0,…} with n keys, the last one repeated when dup.
func manyKeys(n int, dup bool) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"k%d":%d`, i, i)
	}
	if dup {
		fmt.Fprintf(&b, `,"k%d":0`, n-1)
	}
	b.WriteByte('}')
	return b.String()
}

func TestViewFailClosed(t *testing.T) {
	cs := []Constraint{accuracy("t", 0.1)}
	deep := strings.Repeat(`{"a":`, 64) + "1" + strings.Repeat("}", 64)
	tooDeep := strings.Repeat(`{"a":`, 65) + "1" + strings.Repeat("}", 65)
	deepArr := `{"t":1,"a":` + strings.Repeat("[", 64) + strings.Repeat("]", 64) + "}"
	cases := []applyCase{
		{name: "empty", in: ``, err: "withheld: payload: not a JSON object"},
		{name: "blank", in: "  \n", err: "withheld: payload: not a JSON object"},
		{name: "array", in: `[{"t":21.37}]`, err: "withheld: payload: not a JSON object"},
		{name: "number", in: `21.37`, err: "withheld: payload: not a JSON object"},
		{name: "string", in: `"t"`, err: "withheld: payload: not a JSON object"},
		{name: "null", in: `null`, err: "withheld: payload: not a JSON object"},
		{name: "garbage", in: `t=21.37`, err: "withheld: payload: not a JSON object"},
		{name: "bom", in: "\uFEFF{\"t\":1}", err: "withheld: payload: not a JSON object"},
		{name: "unterminated", in: `{"t":21.37`, err: "withheld: payload: unexpected end at offset 10"},
		{name: "trailing object", in: `{"t":21.37}{}`, err: "withheld: payload: data after the object at offset 11"},
		{name: "trailing garbage", in: `{"t":21.37} x`, err: "withheld: payload: data after the object at offset 12"},
		{name: "trailing comma", in: `{"t":21.37,}`, err: "withheld: payload: invalid JSON at offset 11"},
		{name: "single quotes", in: `{'t':21.37}`, err: "withheld: payload: invalid JSON at offset 1"},
		{name: "leading zero", in: `{"t":01}`, err: "withheld: payload: invalid JSON at offset 6"},
		{name: "bare dot", in: `{"t":1.}`, err: "withheld: payload: invalid number at offset 5"},
		{name: "leading dot", in: `{"t":.5}`, err: "withheld: payload: invalid JSON at offset 5"},
		{name: "plus sign", in: `{"t":+1}`, err: "withheld: payload: invalid JSON at offset 5"},
		{name: "NaN", in: `{"t":NaN}`, err: "withheld: payload: invalid JSON at offset 5"},
		{name: "Infinity", in: `{"t":-Infinity}`, err: "withheld: payload: invalid number at offset 5"},
		{name: "bad literal", in: `{"t":1,"x":tru}`, err: "withheld: payload: invalid JSON at offset 11"},
		{name: "invalid utf-8", in: "{\"t\":1,\"x\":\"\xff\"}", err: "withheld: payload: invalid UTF-8 at offset 12"},
		{name: "invalid utf-8 in key", in: "{\"t\":1,\"\xc3\x28\":1}", err: "withheld: payload: invalid UTF-8 at offset 8"},
		{name: "raw control char", in: "{\"t\":1,\"x\":\"a\tb\"}", err: "withheld: payload: control character in string at offset 13"},
		{name: "bad escape", in: `{"t":1,"x":"\x"}`, err: "withheld: payload: invalid escape at offset 12"},
		{name: "lone high surrogate", in: `{"t":1,"x":"\ud800"}`, err: "withheld: payload: lone surrogate at offset 12"},
		{name: "lone low surrogate", in: `{"t":1,"x":"\udc00"}`, err: "withheld: payload: lone surrogate at offset 12"},
		{name: "surrogate pair ok", in: `{"t":1,"x":"\ud83d\ude00"}`, want: `{"t":1.0,"x":"\ud83d\ude00"}`},
		{name: "duplicate top level", in: `{"t":21.37,"t":1}`, err: "withheld: payload: duplicate key at offset 11"},
		{name: "duplicate top level escaped", in: `{"t":1,"\u0074":21.37}`, err: "withheld: payload: duplicate key at offset 7"},
		{name: "duplicate untouched key", in: `{"t":1,"x":1,"x":2}`, err: "withheld: payload: duplicate key at offset 13"},
		{name: "duplicate nested", in: `{"t":1,"o":{"a":1,"a":2}}`, err: "withheld: payload: duplicate key at offset 18"},
		{name: "duplicate in array", in: `{"t":1,"l":[{"a":1},{"b":1,"b":2}]}`, err: "withheld: payload: duplicate key at offset 27"},
		{name: "same key in sibling objects ok", in: `{"t":1,"o":{"a":1},"p":{"a":1}}`, want: `{"t":1.0,"o":{"a":1},"p":{"a":1}}`},
		{name: "duplicate in large object", in: strings.Replace(manyKeys(40, true), `{`, `{"t":1,`, 1),
			err: fmt.Sprintf("withheld: payload: duplicate key at offset %d", len(manyKeys(40, false))-1+len(`"t":1,`)+1)},
		{name: "nesting 64 ok", in: `{"t":1,"x":` + deep[5:], want: `{"t":1.0,"x":` + deep[5:]},
		{name: "nesting 65 refused", in: tooDeep, err: "withheld: payload: nesting too deep at offset 320"},
		{name: "array nesting refused", in: deepArr, err: "withheld: payload: nesting too deep at offset 74"},
	}
	for i := range cases {
		cases[i].cs = cs
	}
	runApplyCases(t, cases)
}

func TestViewOutputDoesNotAlias(t *testing.T) {
	for _, v := range []*View{
		mustView(t, testKey, accuracy("t", 0.1)),
		mustView(t, testKey, drop("x")),
		mustView(t, testKey, rate(1)),
	} {
		in := []byte(`{"t":21.37,"s":"abc"}`)
		out, err := v.Apply(in)
		if err != nil {
			t.Fatal(err)
		}
		want := string(out)
		for i := range in {
			in[i] = 'X'
		}
		if string(out) != want {
			t.Errorf("%s: output changed with the input: %s", v.Key(), out)
		}
	}
}

func TestViewKey(t *testing.T) {
	key := func(k []byte, cs ...Constraint) string { return mustView(t, k, cs...).Key() }
	other := []byte("another-owner-secret")
	same := []struct {
		name string
		a, b string
	}{
		{"equal constraints", key(testKey, accuracy("t", 0.1)), key(testKey, accuracy("t", 0.1))},
		{"key irrelevant without pseudonymize", key(testKey, accuracy("t", 0.1)), key(other, accuracy("t", 0.1))},
		{"keep is a set", key(testKey, keep("a", "b")), key(testKey, keep("b", "a", "b"))},
		{"pseudonymize same key", key(testKey, pseudo("u")), key(bytes.Clone(testKey), pseudo("u"))},
	}
	for _, c := range same {
		if c.a != c.b {
			t.Errorf("%s: keys differ: %q vs %q", c.name, c.a, c.b)
		}
	}
	differ := []struct {
		name string
		a, b string
	}{
		{"step", key(testKey, accuracy("t", 0.1)), key(testKey, accuracy("t", 0.2))},
		{"field", key(testKey, accuracy("t", 0.1)), key(testKey, accuracy("u", 0.1))},
		{"kind", key(testKey, keep("t")), key(testKey, drop("t"))},
		{"order", key(testKey, accuracy("t", 1), pseudo("t")), key(testKey, pseudo("t"), accuracy("t", 1))},
		{"pseudonymize key", key(testKey, pseudo("u")), key(other, pseudo("u"))},
		{"names quoted", key(testKey, keep("a,b")), key(testKey, keep("a", "b"))},
		{"range min vs max", key(testKey, rangeC("t", f64(1), nil)), key(testKey, rangeC("t", nil, f64(1)))},
		{"rate", key(testKey, accuracy("t", 1), rate(1)), key(testKey, accuracy("t", 1), rate(2))},
		{"geo meters", key(testKey, geo("a", "b", 1000)), key(testKey, geo("a", "b", 1001))},
	}
	for _, c := range differ {
		if c.a == c.b {
			t.Errorf("%s: keys equal: %q", c.name, c.a)
		}
	}
	k := key(testKey, pseudo("u"))
	if strings.Contains(k, string(testKey)) || strings.Contains(k, hex.EncodeToString(testKey)) {
		t.Errorf("key %q contains the owner's key", k)
	}
	if want := `accuracy("t",0.1);fields(drop="a","b")`; key(testKey, accuracy("t", 0.1), drop("b", "a")) != want {
		t.Errorf("key = %q, want %q", key(testKey, accuracy("t", 0.1), drop("b", "a")), want)
	}
}

func TestNewViewErrors(t *testing.T) {
	tenth := 0.1 // a variable, so that tenth+0.2 is float64 arithmetic: 0.30000000000000004
	cases := []struct {
		name string
		key  []byte
		cs   []Constraint
		want string
	}{
		{"unknown kind", testKey, []Constraint{{Kind: "blur", Field: "t"}}, `constraints[0]: kind: unknown constraint kind "blur"`},
		{"zero step", testKey, []Constraint{accuracy("t", 0)}, "constraints[0]: step: must be a positive number"},
		{"negative step", testKey, []Constraint{accuracy("t", -1)}, "constraints[0]: step: must be a positive number"},
		{"NaN step", testKey, []Constraint{accuracy("t", math.NaN())}, "constraints[0]: step: must be a positive number"},
		{"Inf step", testKey, []Constraint{accuracy("t", math.Inf(1))}, "constraints[0]: step: must be a positive number"},
		{"step too fine", testKey, []Constraint{accuracy("t", 1e-20)}, "constraints[0]: step: more than 15 decimals"},
		{"float noise step", testKey, []Constraint{accuracy("t", tenth+0.2)}, "constraints[0]: step: more than 15 decimals"},
		{"empty field", testKey, []Constraint{accuracy("", 1)}, "constraints[0]: field: must not be empty"},
		{"empty segment", testKey, []Constraint{accuracy("a..b", 1)}, `constraints[0]: field: "a..b" has an empty path segment`},
		{"geo meters", testKey, []Constraint{rate(1), geo("lat", "lon", 0)}, "constraints[1]: meters: must be a positive number"},
		{"geo same field", testKey, []Constraint{geo("p", "p", 10)}, "constraints[0]: lon: must differ from lat"},
		{"geo no lon", testKey, []Constraint{geo("lat", "", 10)}, "constraints[0]: lon: must not be empty"},
		{"range neither", testKey, []Constraint{rangeC("t", nil, nil)}, "constraints[0]: range: needs min or max"},
		{"range inverted", testKey, []Constraint{rangeC("t", f64(2), f64(1))}, "constraints[0]: max: must not be below min"},
		{"range NaN", testKey, []Constraint{rangeC("t", f64(math.NaN()), nil)}, "constraints[0]: min: must be a finite number"},
		{"fields both", testKey, []Constraint{{Kind: ConstraintFields, Keep: []string{"a"}, Drop: []string{"b"}}}, "constraints[0]: fields: keep and drop are exclusive"},
		{"fields none", testKey, []Constraint{{Kind: ConstraintFields}}, "constraints[0]: fields: needs keep or drop"},
		{"fields dotted", testKey, []Constraint{drop("position.lat")}, `constraints[0]: drop: "position.lat": fields acts on top-level keys only, not dotted paths`},
		{"fields empty name", testKey, []Constraint{keep("a", "")}, "constraints[0]: keep: names must not be empty"},
		{"pseudonymize without key", nil, []Constraint{pseudo("u")}, "constraints[0]: pseudonymize needs the owner's key"},
		{"rate zero", testKey, []Constraint{rate(0)}, "constraints[0]: seconds: must be a positive number"},
		{"rate huge", testKey, []Constraint{rate(1e300)}, "constraints[0]: seconds: must be a positive number"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, err := NewView(c.key, c.cs)
			if err == nil {
				t.Fatalf("NewView = %q, want error %q", v.Key(), c.want)
			}
			if err.Error() != c.want {
				t.Errorf("error %q, want %q", err, c.want)
			}
		})
	}
}

func TestViewConcurrentApply(t *testing.T) {
	v := mustView(t, testKey, accuracy("temperature", 0.5), geo("lat", "lon", 1000), pseudo("user"), drop("secret"))
	inputs := []string{
		`{"user":"alice","temperature":21.37,"lat":48.7758,"lon":9.1829,"secret":1}`,
		`{"user":"bob","temperature":-3.2,"lat":-33.8688,"lon":151.2093}`,
		`{ "user" : {"id":7}, "temperature" : 1e2, "lat" : 0, "lon" : 0, "x":[1,2,3] }`,
	}
	want := make([]string, len(inputs))
	for i, in := range inputs {
		out, err := v.Apply([]byte(in))
		if err != nil {
			t.Fatal(err)
		}
		want[i] = string(out)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := range 32 {
		wg.Go(func() {
			for n := range 200 {
				i := (g + n) % len(inputs)
				out, err := v.Apply([]byte(inputs[i]))
				if err != nil || string(out) != want[i] {
					select {
					case errs <- fmt.Sprintf("Apply(%s) = %s, %v; want %s", inputs[i], out, err, want[i]):
					default:
					}
					return
				}
				if _, err := v.Apply([]byte(`{"user":1,"user":2}`)); err == nil {
					errs <- "duplicate accepted"
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestViewAccuracyExactFormatting checks the integer fast path of accuracy
// against the definition, round(v/step)·step formatted with the step's
// decimals, over many values and steps.
func TestViewAccuracyExactFormatting(t *testing.T) {
	steps := []float64{0.001, 0.01, 0.1, 0.25, 0.3, 0.5, 1, 2.5, 5, 10, 100, 0.05}
	x := uint64(0x9E3779B97F4A7C15)
	for n := range 20000 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		mag := math.Pow10(int(x%10) - 2)
		v := (float64(x>>11)/(1<<53) - 0.5) * 2 * mag
		step := steps[n%len(steps)]
		op, err := compileConstraint(accuracy("t", step))
		if err != nil || op.units == 0 {
			t.Fatalf("step %v: units %d, %v", step, op.units, err)
		}
		q := math.Round(v / step)
		r := q * step
		if r == 0 {
			r = 0 // the definition writes zero without a sign
		}
		want := strconv.FormatFloat(r, 'f', op.decimals, 64)
		got := string(appendFixed(nil, int64(q)*op.units, op.decimals))
		if got != want {
			t.Fatalf("v=%v step=%v: fast path %s, definition %s", v, step, got, want)
		}
	}
}

func TestViewDuplicateInLargeNestedObject(t *testing.T) {
	nested := manyKeys(30, true)
	v := mustView(t, testKey, accuracy("t", 1))
	_, err := v.Apply([]byte(`{"t":1,"n":[` + nested + `]}`))
	if err == nil || !strings.Contains(err.Error(), "duplicate key") {
		t.Fatalf("duplicate in a large nested object: %v", err)
	}
	out, err := v.Apply([]byte(`{"t":1,"n":[` + manyKeys(30, false) + `,` + manyKeys(30, false) + `]}`))
	if err != nil {
		t.Fatalf("equal sibling objects refused: %v (%s)", err, out)
	}
}

// checkTwoPhase checks that Render(ParsePayload(in)) gives what Apply(in)
// gave (out, err): the same bytes, or the same error. A view that does not
// rewrite forwards even what does not parse, so only rewriting views must
// agree on parse errors.
func checkTwoPhase(t testing.TB, v *View, in, out []byte, err error) {
	t.Helper()
	orig := bytes.Clone(in)
	p, perr := ParsePayload(in)
	if perr != nil {
		if p != nil {
			t.Fatalf("ParsePayload(%q) returned a Payload with error %v", in, perr)
		}
		if !errors.Is(perr, ErrWithheld) {
			t.Fatalf("ParsePayload(%q) error %v does not wrap ErrWithheld", in, perr)
		}
		if !v.Rewrites() {
			return
		}
		if err == nil || err.Error() != perr.Error() {
			t.Fatalf("ParsePayload(%q) error %v, Apply error %v", in, perr, err)
		}
		return
	}
	checkPayload(t, p)
	got, rerr := v.Render(p)
	if (rerr == nil) != (err == nil) || rerr != nil && rerr.Error() != err.Error() {
		t.Fatalf("Render(%q) error %v, Apply error %v", in, rerr, err)
	}
	if !bytes.Equal(got, out) || (got == nil) != (out == nil) {
		t.Fatalf("Render(%q) = %q, Apply = %q", in, got, out)
	}
	if again, _ := v.Render(p); !bytes.Equal(again, got) {
		t.Fatalf("second Render(%q) = %q, first %q", in, again, got)
	}
	if !bytes.Equal(in, orig) {
		t.Fatalf("ParsePayload or Render modified the input")
	}
}

// checkPayload checks the index of p against encoding/json: the compact
// text is json.Compact of the input; every recorded member's key and value
// are where the index says, with the decoded name; and exactly the object
// values of recorded members are recorded objects.
func checkPayload(t testing.TB, p *Payload) {
	t.Helper()
	var compact bytes.Buffer
	if err := json.Compact(&compact, p.raw); err != nil {
		t.Fatalf("ParsePayload accepted what encoding/json rejects: %q: %v", p.raw, err)
	}
	if !bytes.Equal(p.src, compact.Bytes()) {
		t.Fatalf("compact text %q, want %q", p.src, compact.Bytes())
	}
	seen := make([]bool, len(p.objs))
	var walk func(o int, text []byte)
	walk = func(o int, text []byte) {
		if seen[o] {
			t.Fatalf("object %d reached twice", o)
		}
		seen[o] = true
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(text, &obj); err != nil {
			t.Fatalf("object %d: %q is not an object: %v", o, text, err)
		}
		ms := members(p, o)
		if len(ms) != len(obj) {
			t.Fatalf("object %d %q: %d members recorded, %d in the text", o, text, len(ms), len(obj))
		}
		for _, f := range ms {
			var name string
			if err := json.Unmarshal(p.src[f.keyStart:f.keyEnd], &name); err != nil {
				t.Fatalf("key %q: %v", p.src[f.keyStart:f.keyEnd], err)
			}
			var buf []byte
			if got := p.name(&f, &buf); string(got) != name || p.src[f.keyEnd] != ':' {
				t.Fatalf("member %q: name %q, %q follows the key", name, got, p.src[f.keyEnd])
			}
			if f.escaped != bytes.ContainsRune(p.src[f.keyStart:f.keyEnd], '\\') {
				t.Fatalf("member %q: escaped %v", name, f.escaped)
			}
			val := p.src[f.valStart():f.valEnd]
			if !bytes.Equal(val, obj[name]) {
				t.Fatalf("member %q: value %q, want %q", name, val, obj[name])
			}
			if (f.child >= 0) != (val[0] == '{') {
				t.Fatalf("member %q: child %d for value %q", name, f.child, val)
			}
			if f.child >= 0 {
				walk(f.child, val)
			}
		}
	}
	walk(0, p.src)
	if i := slices.Index(seen, false); i >= 0 {
		t.Fatalf("object %d is recorded but unreachable", i)
	}
}

// TestPayloadRenderUnderViews renders each of several payloads under
// several views from one parse, against Apply.
func TestPayloadRenderUnderViews(t *testing.T) {
	views := []*View{
		mustView(t, testKey, accuracy("temperature", 0.5), drop("secret")),
		mustView(t, testKey, geo("pos.lat", "pos.lon", 1000), pseudo("user")),
		mustView(t, testKey, keep("user", "pos"), accuracy("pos.alt", 10)),
		mustView(t, testKey, rangeC("temperature", f64(-20), f64(20))),
		mustView(t, testKey, rate(5)),
	}
	inputs := []string{
		`{"user":"alice","temperature":21.37,"pos":{"lat":48.7758,"lon":9.1829,"alt":312.4},"secret":"s"}`,
		" {\n \"us\\u0065r\" : { \"id\" : 7 , \"n\" : [ 1 , { \"a\" : \"x y\" } ] } ,\n \"temperature\" : -3.2e1 ,\n" +
			" \"pos\" : { \"lon\" : 151.2093 , \"lat\" : -33.8688 , \"alt\" : 5 } }\t",
		`{"user":null,"temperature":12,"pos":{"lat":0,"lon":0}}`, // no alt: the third view withholds
	}
	for _, in := range inputs {
		p, err := ParsePayload([]byte(in))
		if err != nil {
			t.Fatalf("ParsePayload(%q): %v", in, err)
		}
		checkPayload(t, p)
		for _, v := range views {
			want, werr := v.Apply([]byte(in))
			got, gerr := v.Render(p)
			if fmt.Sprint(gerr) != fmt.Sprint(werr) || !bytes.Equal(got, want) {
				t.Errorf("%s on %q:\nRender %q, %v\n Apply %q, %v", v.Key(), in, got, gerr, want, werr)
			}
		}
	}
	// The views do see different things of the first payload.
	p, _ := ParsePayload([]byte(inputs[0]))
	outs := map[string]bool{}
	for _, v := range views[:3] {
		out, err := v.Render(p)
		if err != nil {
			t.Fatal(err)
		}
		outs[string(out)] = true
	}
	if len(outs) != 3 {
		t.Errorf("three views render %d distinct outputs", len(outs))
	}
}

func TestPayloadRawForNonRewritingView(t *testing.T) {
	in := " {\"t\" : 21.37} "
	p, err := ParsePayload([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []*View{mustView(t, testKey, rate(1)), mustView(t, testKey)} {
		if out, err := v.Render(p); err != nil || string(out) != in {
			t.Errorf("%q: Render = %q, %v; want the payload as it was", v.Key(), out, err)
		}
	}
	if out, err := mustView(t, testKey, accuracy("t", 1)).Render(p); err != nil || string(out) != `{"t":21}` {
		t.Errorf("Render = %q, %v", out, err)
	}
}

func TestRenderUnparsed(t *testing.T) {
	for _, v := range []*View{mustView(t, testKey, accuracy("t", 1)), mustView(t, testKey, rate(1))} {
		for _, p := range []*Payload{nil, {}} {
			out, err := v.Render(p)
			if !errors.Is(err, ErrWithheld) || out != nil || err.Error() != "withheld: payload: not parsed" {
				t.Errorf("Render(%#v) = %q, %v", p, out, err)
			}
		}
	}
}

func TestParsePayloadErrors(t *testing.T) {
	tooDeep := strings.Repeat(`{"a":`, 65) + "1" + strings.Repeat("}", 65)
	for in, want := range map[string]string{
		``:                           "withheld: payload: not a JSON object",
		`[1]`:                        "withheld: payload: not a JSON object",
		`{"t":21.37`:                 "withheld: payload: unexpected end at offset 10",
		`{"t":21.37} x`:              "withheld: payload: data after the object at offset 12",
		`{"t":01}`:                   "withheld: payload: invalid JSON at offset 6",
		`{"t":1.}`:                   "withheld: payload: invalid number at offset 5",
		"{\"x\":\"\xff\"}":           "withheld: payload: invalid UTF-8 at offset 6",
		`{"x":"\ud800"}`:             "withheld: payload: lone surrogate at offset 6",
		`{"t":1,"\u0074":2}`:         "withheld: payload: duplicate key at offset 7",
		`{"o":{"a":1,"a":2}}`:        "withheld: payload: duplicate key at offset 12",
		`{"l":[{"b":1,"b":2}]}`:      "withheld: payload: duplicate key at offset 13",
		tooDeep:                      "withheld: payload: nesting too deep at offset 320",
		`{"l":[[[` + "\x00" + `]]]}`: "withheld: payload: invalid JSON at offset 8",
	} {
		p, err := ParsePayload([]byte(in))
		if err == nil || p != nil {
			t.Errorf("ParsePayload(%q) = %v, %v; want %q", in, p, err, want)
			continue
		}
		if !errors.Is(err, ErrWithheld) || err.Error() != want {
			t.Errorf("ParsePayload(%q) error %q, want %q wrapping ErrWithheld", in, err, want)
		}
		_, aerr := mustView(t, testKey, accuracy("t", 1)).Apply([]byte(in))
		if aerr == nil || aerr.Error() != err.Error() {
			t.Errorf("ParsePayload(%q) error %q, Apply %v", in, err, aerr)
		}
	}
}

// TestPayloadConcurrentRender renders one Payload under several views
// from many goroutines (run with -race) and checks it is left unchanged.
func TestPayloadConcurrentRender(t *testing.T) {
	in := []byte(" { \"user\" : \"alice\", \"temperature\" : 21.37 , \"pos\" : { \"lat\" : 48.7758, \"lon\" : 9.1829, " +
		"\"meta\" : { \"id\" : [1, {\"k\": 2}] } }, \"secr\\u0065t\" : 1 }")
	views := []*View{
		mustView(t, testKey, accuracy("temperature", 0.5), drop("secret")),
		mustView(t, testKey, geo("pos.lat", "pos.lon", 1000), pseudo("user"), pseudo("pos.meta")),
		mustView(t, testKey, keep("pos"), accuracy("pos.lat", 0.1), pseudo("pos")),
		mustView(t, testKey, accuracy("missing", 1)),
	}
	p, err := ParsePayload(in)
	if err != nil {
		t.Fatal(err)
	}
	before := *p
	before.src = bytes.Clone(p.src)
	before.index, before.objs = slices.Clone(p.index), slices.Clone(p.objs)
	want := make([]string, len(views))
	for i, v := range views {
		out, err := v.Apply(in)
		want[i] = fmt.Sprintf("%s %v", out, err)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := range 32 {
		wg.Go(func() {
			for n := range 200 {
				i := (g + n) % len(views)
				out, err := views[i].Render(p)
				if got := fmt.Sprintf("%s %v", out, err); got != want[i] {
					select {
					case errs <- fmt.Sprintf("Render under %s = %s; want %s", views[i].Key(), got, want[i]):
					default:
					}
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if !bytes.Equal(p.src, before.src) ||
		!bytes.Equal(p.index, before.index) || !slices.Equal(p.objs, before.objs) || !bytes.Equal(p.raw, in) {
		t.Error("Render changed the Payload")
	}
}

// TestParsePayloadIndex checks the recorded structure on payloads with
// nesting, arrays of objects, escaped keys and whitespace.
func TestParsePayloadIndex(t *testing.T) {
	for _, in := range []string{
		`{}`,
		` { } `,
		`{"a":{}}`,
		`{"a":{"b":{"c":{"d":1}},"e":[{"f":{"g":1}}]},"h":{"i":2}}`,
		"{\n\t\"\\u0061\" : { \"\\n\" : { } , \"b\" : [ { \"c\" : 1 } , { \"c\" : 2 } ] } , \"z\" : \"a \\\" b\" }",
		manyKeys(40, false),
		`{"n":` + manyKeys(40, false) + `}`,
	} {
		p, err := ParsePayload([]byte(in))
		if err != nil {
			t.Fatalf("ParsePayload(%q): %v", in, err)
		}
		checkPayload(t, p)
	}
}

// TestPlainEnd checks the word-at-a-time scan against the byte table: every
// byte value at every position of two words, and mixes of the bytes near
// the edges of what notPlain flags.
func TestPlainEnd(t *testing.T) {
	naive := func(b []byte, i int) int {
		for i < len(b) && plain[b[i]] {
			i++
		}
		return i
	}
	check := func(b []byte) {
		t.Helper()
		for i := 0; i <= len(b); i++ {
			if got, want := plainEnd(b, i), naive(b, i); got != want {
				t.Fatalf("plainEnd(%q, %d) = %d, want %d", b, i, got, want)
			}
		}
	}
	for c := range 256 {
		for pos := range 17 {
			b := bytes.Repeat([]byte{'a'}, 17)
			b[pos] = byte(c)
			check(b)
			// A second non-plain byte after the first must not hide it,
			// whatever the borrow of the first does to the bytes above.
			for _, d := range []byte{0, '"', '\\', 0x1f, 0x80, 0xff} {
				for next := pos + 1; next < len(b); next++ {
					b2 := bytes.Clone(b)
					b2[next] = d
					check(b2)
				}
			}
		}
	}
	edges := []byte{0x00, 0x01, 0x1f, 0x20, 0x21, '"', '#', '[', '\\', ']', 0x7f, 0x80, 0x81, 0xa2, 0xdc, 0xff}
	seed := uint64(1)
	for range 20000 {
		b := make([]byte, int(seed%24))
		for k := range b {
			seed = seed*6364136223846793005 + 1442695040888963407
			b[k] = edges[seed>>59&15]
		}
		seed = seed*6364136223846793005 + 1442695040888963407
		check(b)
	}
}

// TestParseStringAtWordBoundaries puts each kind of string content at
// every position relative to the eight-byte words plainEnd reads, in a
// value and in a key, and checks the verdict and the offset.
func TestParseStringAtWordBoundaries(t *testing.T) {
	cases := []struct {
		name, text string
		err        string // the reason, at the offset of the text plus at; "" when valid
		at         int
	}{
		{name: "ascii", text: "abcdefghij"},
		{name: "escaped quote", text: `\"`},
		{name: "escaped backslash", text: `\\`},
		{name: "escape", text: `\n\t\/`},
		{name: "unicode escape", text: `\u00e9`},
		{name: "surrogate pair", text: `\ud83d\ude00`},
		{name: "two bytes", text: "\u00e9"},
		{name: "three bytes", text: "\u20ac"},
		{name: "four bytes", text: "\U0001F600"},
		{name: "del", text: "\x7f"},
		{name: "nul", text: "\x00", err: "control character in string"},
		{name: "unit separator", text: "a\x1f", err: "control character in string", at: 1},
		{name: "tab", text: "\t", err: "control character in string"},
		{name: "lone continuation", text: "\x80", err: "invalid UTF-8"},
		{name: "ff", text: "ab\xff", err: "invalid UTF-8", at: 2},
		{name: "truncated three bytes", text: "\xe2\x82a", err: "invalid UTF-8"},
		{name: "overlong", text: "\xc0\xaf", err: "invalid UTF-8"},
		{name: "utf-8 surrogate", text: "\xed\xa0\x80", err: "invalid UTF-8"},
		{name: "beyond U+10FFFF", text: "\xf4\x90\x80\x80", err: "invalid UTF-8"},
		{name: "bad escape", text: `\x`, err: "invalid escape"},
		{name: "short unicode escape", text: `\u00e`, err: "invalid escape"},
		{name: "lone high surrogate", text: `\ud83da`, err: "lone surrogate"},
		{name: "lone low surrogate", text: `a\ude00`, err: "lone surrogate", at: 1},
	}
	for _, c := range cases {
		for pad := range 18 {
			p := strings.Repeat("p", pad)
			for _, form := range []struct{ before, after string }{
				{`{"k":"` + p, `"}`},
				{`{"` + p, `":1}`},
				{`{"a":1,"` + p, `":[true]}`},
			} {
				in := form.before + c.text + form.after
				want := ""
				if c.err != "" {
					want = fmt.Sprintf("withheld: payload: %s at offset %d", c.err, len(form.before)+c.at)
				}
				_, err := ParsePayload([]byte(in))
				if got := fmt.Sprint(err); err == nil && want != "" || err != nil && got != want {
					t.Errorf("%s: ParsePayload(%q) = %v, want %q", c.name, in, err, want)
				}
				if c.err == "" && !json.Valid([]byte(in)) {
					t.Fatalf("%s: test input %q is not JSON", c.name, in)
				}
			}
		}
	}
}

// TestDuplicateKeysAtWordBoundaries checks that keys equal after
// unescaping are duplicates wherever their escapes and multi-byte
// characters fall.
func TestDuplicateKeysAtWordBoundaries(t *testing.T) {
	for pad := range 18 {
		p := strings.Repeat("p", pad)
		for _, pair := range [][2]string{
			{"\u00e9", `\u00e9`},
			{"\U0001F600", `\ud83d\ude00`},
			{`\"`, `\u0022`},
			{`\\`, `\u005c`},
			{"x", `\u0078`},
		} {
			first := `{"` + p + pair[0] + `":1,`
			in := first + `"` + p + pair[1] + `":2}`
			want := fmt.Sprintf("withheld: payload: duplicate key at offset %d", len(first))
			if _, err := ParsePayload([]byte(in)); fmt.Sprint(err) != want {
				t.Errorf("ParsePayload(%q) = %v, want %q", in, err, want)
			}
			nested := `{"o":{"` + p + pair[1] + `":1,"` + p + pair[0] + `":2}}`
			if _, err := ParsePayload([]byte(nested)); err == nil || !strings.Contains(err.Error(), "duplicate key") {
				t.Errorf("ParsePayload(%q) = %v, want a duplicate key", nested, err)
			}
		}
	}
}

// TestShortDecimal checks the fast conversion against ParseFloat, which it
// must match bit for bit, on numbers around its limits.
func TestShortDecimal(t *testing.T) {
	inputs := []string{"0", "-0", "0.0", "-0.0", "1", "21.37", "-67", "1013.25", "0.1", "0.3", "123456789012345",
		"999999999999999", "1234567890123456", "0.000000000000001", "9007199254740993", "1.000000000000001",
		"123456789012.345", "1e3", "1E-3", "2.5e+1", "00", "12345678901234567890"}
	seed := uint64(7)
	for range 100000 {
		seed = seed*6364136223846793005 + 1442695040888963407
		digs := strconv.FormatUint(seed>>(seed%60), 10)
		if n := int(seed>>50) % (len(digs) + 1); n < len(digs) {
			digs = digs[:n] + "." + digs[n:]
			if n == 0 {
				digs = "0" + digs
			}
		}
		if seed&1 == 1 {
			digs = "-" + digs
		}
		inputs = append(inputs, digs)
	}
	for _, in := range inputs {
		want, _ := strconv.ParseFloat(in, 64)
		if got := number([]byte(in)); math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("number(%q) = %v, ParseFloat %v", in, got, want)
		}
	}
}

// TestDigits checks the word-at-a-time digit run against a byte loop:
// every byte value at every position of two words, after runs of every
// length.
func TestDigits(t *testing.T) {
	naive := func(b []byte, i int) int {
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i
	}
	for c := range 256 {
		for pos := range 17 {
			b := []byte("12345678901234567")
			b[pos] = byte(c)
			for i := 0; i <= len(b); i++ {
				if got, want := digits(b, i), naive(b, i); got != want {
					t.Fatalf("digits(%q, %d) = %d, want %d", b, i, got, want)
				}
			}
		}
	}
}

// TestPayloadIndexRoundTrip checks that the encoded members of a Payload
// decode to exactly the fields the parse recorded, with lengths that take
// one, two and three bytes to encode.
func TestPayloadIndexRoundTrip(t *testing.T) {
	long := strings.Repeat("k", 200)
	longer := strings.Repeat("v", 20000)
	for _, in := range []string{
		`{}`,
		benchString(),
		`{"` + long + `":"` + longer + `","o":{"` + long + `":{"x":[` + strings.Repeat(`1,`, 100) + `1]},"b":2},"z":{}}`,
		" { \"\\u0061\" : { \"` \" : 1 } ,\n\"" + long + "\\n\" : \"" + longer + "\" } ",
		manyKeys(300, false),
	} {
		st := getScratch()
		if err := st.parse([]byte(in)); err != nil {
			t.Fatalf("parse(%.40q): %v", in, err)
		}
		p := st.payload()
		if len(p.objs) != len(st.pl.objs) || !bytes.Equal(p.src, st.pl.src) {
			t.Fatalf("%.40q: clone has %d objects and text %.40q; parse %d, %.40q", in, len(p.objs), p.src, len(st.pl.objs), st.pl.src)
		}
		for o := range p.objs {
			if got, want := members(p, o), members(&st.pl, o); !slices.Equal(got, want) {
				t.Fatalf("%.40q: object %d decodes to %v, parsed %v", in, o, got, want)
			}
		}
		if p.index == nil || len(p.index) != cap(p.index) {
			t.Errorf("%.40q: index has len %d, cap %d", in, len(p.index), cap(p.index))
		}
		checkPayload(t, p)
		st.release()
	}
}

func benchString() string { return string(benchReading) }

// members returns the members of objs[o] of p, decoded when encoded. It
// asks for every other one first, then for all back to front, so that a
// decoding that depends on the order of requests shows.
func members(p *Payload, o int) []field {
	var m memberList
	m.reset(p, o)
	fs := make([]field, m.n)
	for k := 0; k < m.n; k += 2 {
		fs[k] = *m.at(k)
	}
	for k := m.n - 1; k >= 0; k-- {
		if f := *m.at(k); k%2 == 0 && f != fs[k] {
			panic("memberList: a member changed")
		} else {
			fs[k] = f
		}
	}
	return fs
}

// TestRenderOutputSize checks that an output with nothing dropped is
// allocated at exactly its size, whatever the edits did to the lengths.
func TestRenderOutputSize(t *testing.T) {
	in := []byte(`{"t":21.37,"o":{"a":1.5,"b":"x"},"l":[1],"u":"alice"}`)
	for _, v := range []*View{
		mustView(t, testKey, accuracy("t", 0.5)),
		mustView(t, testKey, accuracy("t", 0.001), accuracy("o.a", 1)),
		mustView(t, testKey, accuracy("o.a", 1), pseudo("o"), pseudo("u")),
	} {
		out, err := v.Apply(in)
		if err != nil || len(out) != cap(out) {
			t.Errorf("%s: Apply = %q (cap %d), %v", v.Key(), out, cap(out), err)
		}
	}
}
