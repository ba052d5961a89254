package influx

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/influxdb-client-go/v2/api/write"
)

func TestLine(t *testing.T) {
	recv := time.Date(2026, 11, 25, 20, 0, 0, 123456789, time.UTC)
	base := Reading{Thing: "thermo-1", Stream: "temperature", Owner: "an", Kind: "sensor", Place: "home-an", Received: recv}
	for _, c := range []struct {
		name    string
		r       func(r Reading) Reading
		payload string
		want    string
		err     error
		skipped int  // fields left out
		noLib   bool // the library would break the line
	}{
		{name: "numbers are floats, receive time", payload: `{"temperature":21.37,"humidity":40}`,
			want: "temperature,thing=thermo-1,owner=an,kind=sensor,place=home-an temperature=21.37,humidity=40 1795636800123456789\n"},
		// The time is the broker's, never the thing's own "ts" (review):
		// that is a field, kept for history to show.
		{name: "ts RFC 3339 is a field", payload: `{"ts":"2026-11-25T19:00:00.5Z","t":1}`,
			want: "temperature,thing=thermo-1,owner=an,kind=sensor,place=home-an ts:str=\"2026-11-25T19:00:00.5Z\",t=1 1795636800123456789\n"},
		{name: "ts epoch ms is a field", payload: `{"t":1,"ts":1764097200123}`,
			want: "temperature,thing=thermo-1,owner=an,kind=sensor,place=home-an t=1,ts=1.764097200123e+12 1795636800123456789\n"},
		{name: "a ts weeks ahead does not place the reading", payload: `{"ts":"2027-01-01T00:00:00Z","t":1}`,
			want: "temperature,thing=thermo-1,owner=an,kind=sensor,place=home-an ts:str=\"2027-01-01T00:00:00Z\",t=1 1795636800123456789\n"},
		{name: "unparsable ts is a field", payload: `{"ts":"yesterday","t":1}`,
			want: "temperature,thing=thermo-1,owner=an,kind=sensor,place=home-an ts:str=\"yesterday\",t=1 1795636800123456789\n"},
		{name: "nested, bool, string, array, null", payload: `{"pos":{"lat":48.7758,"lon":9.1829,"fix":{"ok":true}},"note":"a \"b\"","l":[1,2],"n":null}`,
			want: "temperature,thing=thermo-1,owner=an,kind=sensor,place=home-an pos.lat=48.7758,pos.lon=9.1829,pos.fix.ok:bool=true,note:str=\"a \\\"b\\\"\",l:json=\"[1,2]\" 1795636800123456789\n"},
		{name: "empty tags omitted, escaping", r: func(r Reading) Reading {
			r.Owner, r.Place, r.Thing, r.Stream = "", "", "my thing", "a,b"
			return r
		}, payload: `{"v":1}`,
			want: "a\\,b,thing=my\\ thing,kind=sensor v=1 1795636800123456789\n"},
		{name: "newline in a string stays on the line", payload: `{"s":"a\nb"}`, noLib: true,
			want: "temperature,thing=thermo-1,owner=an,kind=sensor,place=home-an s:str=\"a\\nb\" 1795636800123456789\n"},
		// Valid JSON that used to make a malformed line, and InfluxDB 2.x
		// refuse the whole batch with it (review).
		{name: "a number beyond float64 is left out", payload: `{"t":1e400,"u":-1e400,"v":1}`, skipped: 2,
			want: "temperature,thing=thermo-1,owner=an,kind=sensor,place=home-an v=1 1795636800123456789\n"},
		{name: "only numbers beyond float64", payload: `{"t":1e400}`, skipped: 1, err: ErrNotAReading},
		{name: "an empty name takes a suffix", payload: `{"":1,"v":2,"a":{"":"x"}}`,
			want: "temperature,thing=thermo-1,owner=an,kind=sensor,place=home-an :num=1,v=2,a.:str=\"x\" 1795636800123456789\n"},
		{name: "a name ending in a backslash takes a suffix", payload: `{"a\\":1,"b\\":"x","v":2}`,
			want: "temperature,thing=thermo-1,owner=an,kind=sensor,place=home-an a\\:num=1,b\\:str=\"x\",v=2 1795636800123456789\n"},
		{name: "a backslash before a delimiter is left out", payload: `{"a\\ b":1,"c\\,d":2,"e\\=f":3,"g\\\"h":4,"v":5}`, skipped: 4,
			want: "temperature,thing=thermo-1,owner=an,kind=sensor,place=home-an v=5 1795636800123456789\n"},
		{name: "a backslash elsewhere is literal", payload: `{"a\\b":1,"p":{"\\x":2}}`,
			want: "temperature,thing=thermo-1,owner=an,kind=sensor,place=home-an a\\b=1,p.\\x=2 1795636800123456789\n"},
		{name: "a newline in a name is left out", payload: `{"a\nb":1,"v":2}`, skipped: 1,
			want: "temperature,thing=thermo-1,owner=an,kind=sensor,place=home-an v=2 1795636800123456789\n"},
		{name: "a tab stays a tab, but not a leading one", payload: `{"a\tb":1,"\tc":2}`, skipped: 1, noLib: true,
			want: "temperature,thing=thermo-1,owner=an,kind=sensor,place=home-an a\tb=1 1795636800123456789\n"},
		{name: "a stream ending in a backslash is refused", r: func(r Reading) Reading { r.Stream = `t\`; return r },
			payload: `{"v":1}`, err: ErrNotAReading},
		{name: "a thing with a backslash before a comma is refused", r: func(r Reading) Reading { r.Thing = `a\,b`; return r },
			payload: `{"v":1}`, err: ErrNotAReading},
		{name: "a place with a newline is refused", r: func(r Reading) Reading { r.Place = "a\nb"; return r },
			payload: `{"v":1}`, err: ErrNotAReading},
		// A field's stored key names its type (review): one thing's
		// string "temperature" and another's number are two fields.
		{name: "a key names the type", payload: `{"t":1,"s":"x","b":false,"a":[true],"o":{"n":null}}`,
			want: "temperature,thing=thermo-1,owner=an,kind=sensor,place=home-an t=1,s:str=\"x\",b:bool=false,a:json=\"[true]\" 1795636800123456789\n"},
		{name: "a number named like a suffix or reserved takes one", payload: `{"x:str":1,"y:num":2,"time":3,"owner":4,"_value":5,"z:str":"s"}`,
			want: "temperature,thing=thermo-1,owner=an,kind=sensor,place=home-an x:str:num=1,y:num:num=2,time:num=3,owner:num=4,_value:num=5,z:str:str=\"s\" 1795636800123456789\n"},
		{name: "not an object", payload: `[1,2]`, err: ErrNotAReading},
		{name: "not JSON", payload: `21.5`, err: ErrNotAReading},
		{name: "garbage", payload: `{"a":`, err: ErrNotAReading},
		{name: "no field", payload: `{"n":null}`, err: ErrNotAReading},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := base
			if c.r != nil {
				r = c.r(r)
			}
			r.Payload = []byte(c.payload)
			got, err := Line(r)
			if _, skipped, _ := appendLine(nil, r); skipped != c.skipped {
				t.Errorf("%d fields left out, want %d", skipped, c.skipped)
			}
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("err = %v, want %v", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Fatalf("line\n got %q\nwant %q", got, c.want)
			}
			if strings.Count(got, "\n") != 1 {
				t.Fatalf("a line must be exactly one record: %q", got)
			}
			if c.noLib {
				return
			}
			// The same point as the client library encodes it.
			pt, err := Point(r)
			if err != nil {
				t.Fatal(err)
			}
			if lib := write.PointToLineProtocol(pt, time.Nanosecond); lib != got {
				t.Fatalf("library encodes\n %q\nLine gives\n %q", lib, got)
			}
		})
	}
}

func TestUnflatten(t *testing.T) {
	for _, c := range []struct {
		in   map[string]any
		want map[string]any
	}{
		{map[string]any{"a": 1.0}, map[string]any{"a": 1.0}},
		{map[string]any{"pos.lat": 1.0, "pos.lon": 2.0, "ok": true},
			map[string]any{"pos": map[string]any{"lat": 1.0, "lon": 2.0}, "ok": true}},
		{map[string]any{"a.b.c": "x"}, map[string]any{"a": map[string]any{"b": map[string]any{"c": "x"}}}},
	} {
		if got := Unflatten(c.in); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Unflatten(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// TestFieldOf: every stored key maps back to the reading's field, with
// its type; a key archived before keys named types is kept as it is.
func TestFieldOf(t *testing.T) {
	for _, c := range []struct {
		key      string
		v        any
		wantName string
		want     any
	}{
		{"t", 21.5, "t", 21.5},
		{"s:str", "x", "s", "x"},
		{"b:bool", true, "b", true},
		{"a:json", "[1,2]", "a", json.RawMessage("[1,2]")},
		{":num", 1.0, "", 1.0},
		{`a\:num`, 1.0, `a\`, 1.0},
		{"x:str:num", 1.0, "x:str", 1.0},
		{"z:str:str", "s", "z:str", "s"},
		{"time:num", 3.0, "time", 3.0},
		{"mode", "eco", "mode", "eco"},               // archived before
		{"l:json", "not json", "l:json", "not json"}, // not ours
		{"n:str", 1.0, "n:str", 1.0},                 // not ours
	} {
		name, v := FieldOf(c.key, c.v)
		if name != c.wantName || !reflect.DeepEqual(v, c.want) {
			t.Errorf("FieldOf(%q, %v) = %q, %v; want %q, %v", c.key, c.v, name, v, c.wantName, c.want)
		}
	}
}

func TestFluxString(t *testing.T) {
	for in, want := range map[string]string{
		`plain`:     `"plain"`,
		`a"b`:       `"a\"b"`,
		`a\b`:       `"a\\b"`,
		`${x}`:      `"\${x}"`,
		"line\nend": `"line\nend"`,
	} {
		if got := fluxString(in); got != want {
			t.Errorf("fluxString(%q) = %s, want %s", in, got, want)
		}
	}
}
