package influx_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/adapters/influx"
	"github.com/veil-iot/veil/adapters/influx/influxtest"
)

var server *influxtest.Server

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "veil-influxd-")
	if err != nil {
		panic(err)
	}
	server, err = influxtest.Start(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	server.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

func open(t testing.TB, bucket string, mod func(*influx.Config)) *influx.Archive {
	t.Helper()
	cfg := influx.Config{URL: server.URL, Bucket: bucket, SpoolDir: filepath.Join(t.TempDir(), "spool"),
		FlushInterval: 20 * time.Millisecond, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)}
	if mod != nil {
		mod(&cfg)
	}
	a, err := influx.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(context.Background()) })
	return a
}

func drained(t testing.TB, a *influx.Archive) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Drain(ctx); err != nil {
		t.Fatalf("%v (stats %+v)", err, a.Stats())
	}
}

func TestReadingsArriveWithMeasurementTagsFieldsTime(t *testing.T) {
	a := open(t, "arrive/autogen", nil)
	recv := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	readings := []influx.Reading{
		{Thing: "thermo-1", Stream: "temperature", Owner: "an", Kind: "sensor", Place: "home-an", Received: recv,
			Payload: []byte(`{"temperature":21.37,"humidity":40,"ok":true,"unit":"C","pos":{"room":"kitchen","floor":1}}`)},
		{Thing: "thermo-1", Stream: "temperature", Owner: "an", Kind: "sensor", Place: "home-an", Received: recv.Add(30 * time.Minute),
			Payload: []byte(`{"temperature":19.5,"ts":"2026-11-25T19:30:00Z"}`)},
		{Thing: "watch-1", Stream: "location", Owner: "an", Kind: "sensor", Received: recv.Add(time.Minute),
			Payload: []byte(`{"lat":48.7758,"lon":9.1829,"ts":1795636860000}`)},
	}
	for _, r := range readings {
		if err := a.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	drained(t, a)
	if st := a.Stats(); st.Written != 3 || st.Rejected != 0 || st.SpoolBytes != 0 {
		t.Fatalf("stats %+v", st)
	}
	ctx := context.Background()
	rows, err := a.Query(ctx, fmt.Sprintf(`from(bucket: %q) |> range(start: 2026-11-25T00:00:00Z, stop: 2026-11-26T00:00:00Z)`, a.Bucket()))
	if err != nil {
		t.Fatal(err)
	}
	type rowKey struct{ m, thing, owner, kind, place, field, time string }
	got := map[rowKey]any{}
	for _, r := range rows {
		s := func(k string) string { v, _ := r[k].(string); return v }
		got[rowKey{s("_measurement"), s("thing"), s("owner"), s("kind"), s("place"), s("_field"), r["_time"].(time.Time).UTC().Format(time.RFC3339)}] = r["_value"]
	}
	want := map[rowKey]any{
		{"temperature", "thermo-1", "an", "sensor", "home-an", "temperature", "2026-11-25T20:00:00Z"}:  21.37,
		{"temperature", "thermo-1", "an", "sensor", "home-an", "humidity", "2026-11-25T20:00:00Z"}:     40.0,
		{"temperature", "thermo-1", "an", "sensor", "home-an", "ok:bool", "2026-11-25T20:00:00Z"}:      true,
		{"temperature", "thermo-1", "an", "sensor", "home-an", "unit:str", "2026-11-25T20:00:00Z"}:     "C",
		{"temperature", "thermo-1", "an", "sensor", "home-an", "pos.room:str", "2026-11-25T20:00:00Z"}: "kitchen",
		{"temperature", "thermo-1", "an", "sensor", "home-an", "pos.floor", "2026-11-25T20:00:00Z"}:    1.0,
		{"temperature", "thermo-1", "an", "sensor", "home-an", "temperature", "2026-11-25T20:30:00Z"}:  19.5,
		{"temperature", "thermo-1", "an", "sensor", "home-an", "ts:str", "2026-11-25T20:30:00Z"}:       "2026-11-25T19:30:00Z",
		{"location", "watch-1", "an", "sensor", "", "lat", "2026-11-25T20:01:00Z"}:                     48.7758,
		{"location", "watch-1", "an", "sensor", "", "lon", "2026-11-25T20:01:00Z"}:                     9.1829,
		{"location", "watch-1", "an", "sensor", "", "ts", "2026-11-25T20:01:00Z"}:                      1795636860000.0,
	}
	if len(got) != len(want) {
		t.Errorf("got %d rows, want %d: %v", len(got), len(want), got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%+v = %v, want %v", k, got[k], v)
		}
	}

	// History returns one row per reading, oldest first, fields by their
	// flattened names and types.
	var hist []influx.Row
	err = a.History(ctx, "thermo-1", "temperature", "an", recv.Add(-time.Minute), recv.Add(2*time.Hour), func(r influx.Row) bool {
		hist = append(hist, r)
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 || !hist[0].Time.Equal(recv) || !hist[1].Time.Equal(recv.Add(30*time.Minute)) || hist[1].Fields["temperature"] != 19.5 ||
		hist[1].Fields["ts"] != "2026-11-25T19:30:00Z" || hist[0].Fields["pos.room"] != "kitchen" {
		t.Fatalf("history %+v", hist)
	}
}

func TestCreatesDatabaseAndRetentionPolicy(t *testing.T) {
	a := open(t, "made/short", nil)
	if err := a.Append(influx.Reading{Thing: "x", Stream: "s", Payload: []byte(`{"v":1}`), Received: time.Now()}); err != nil {
		t.Fatal(err)
	}
	drained(t, a)
	rows, err := a.Query(context.Background(), `from(bucket: "made/short") |> range(start: -1h)`)
	if err != nil || len(rows) != 1 {
		t.Fatalf("rows %v, err %v", rows, err)
	}
}

func TestInvalidPointsCountedNotBlocking(t *testing.T) {
	a := open(t, "conflict", nil)
	now := time.Now()
	// A shard holding "v" as a string (as Veil wrote strings before keys
	// named their types) refuses the number "v" (field type conflict). It
	// is counted, and later points still flow.
	if err := a.AppendLine(fmt.Appendf(nil, "s,thing=x v=\"text\" %d\n", now.UnixNano())); err != nil {
		t.Fatal(err)
	}
	drained(t, a)
	for i, p := range []string{`{"v":1}`, `{"w":"text"}`, `{"w":3}`} {
		if err := a.Append(influx.Reading{Thing: "x", Stream: "s", Payload: []byte(p), Received: now.Add(time.Duration(i+1) * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
		drained(t, a)
	}
	if st := a.Stats(); st.Written != 3 || st.Rejected != 1 {
		t.Fatalf("stats %+v, want 3 written and 1 rejected", st)
	}
	if err := a.Append(influx.Reading{Thing: "x", Stream: "s", Payload: []byte(`"not an object"`), Received: now}); err == nil {
		t.Fatal("a non-object reading was accepted")
	}
	if st := a.Stats(); st.Invalid != 1 {
		t.Fatalf("stats %+v, want 1 invalid", st)
	}
}

// TestOneThingsFieldTypeConflictsWithNoOther (review): InfluxDB fixes a
// field's type in a shard by the first value written. Mallory's thing
// writing a string, then a boolean, "temperature" first does not make An's
// float temperatures of the same stream name and shard be refused: the
// three are different fields, and each comes back with its type.
func TestOneThingsFieldTypeConflictsWithNoOther(t *testing.T) {
	a := open(t, "types", nil)
	recv := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	for i, r := range []influx.Reading{
		{Thing: "mallory-1", Owner: "mallory", Payload: []byte(`{"temperature":"x"}`)},
		{Thing: "mallory-2", Owner: "mallory", Payload: []byte(`{"temperature":true}`)},
		{Thing: "thermo-1", Owner: "an", Payload: []byte(`{"temperature":21.5}`)},
		{Thing: "thermo-1", Owner: "an", Payload: []byte(`{"temperature":22}`)},
	} {
		r.Stream, r.Received = "temperature", recv.Add(time.Duration(i)*time.Second)
		if err := a.Append(r); err != nil {
			t.Fatal(err)
		}
		drained(t, a) // each in its own request: mallory's are first in the shard
	}
	if st := a.Stats(); st.Written != 4 || st.Rejected != 0 {
		t.Fatalf("stats %+v, want all 4 written", st)
	}
	for thing, want := range map[string][]any{"thermo-1": {21.5, 22.0}, "mallory-1": {"x"}, "mallory-2": {true}} {
		var got []any
		owner := map[bool]string{true: "an", false: "mallory"}[thing == "thermo-1"]
		err := a.History(context.Background(), thing, "temperature", owner, recv, recv.Add(time.Minute), func(r influx.Row) bool {
			got = append(got, r.Fields["temperature"])
			return true
		})
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: history %v (%v), want %v", thing, got, err, want)
		}
	}
}

// TestOddNamesStoredExactly: every name the archive takes (as a stream, a
// tag or a field key) reaches InfluxDB exactly as it was, so the line that
// carries it parses (influxd 1.8 parses as 2.x does, where one bad line
// loses the whole batch); a name the line protocol cannot carry is refused
// (a stream or tag) or left out and counted (a field key). The names are
// every string of up to three of the line protocol's special characters.
func TestOddNamesStoredExactly(t *testing.T) {
	a := open(t, "names", nil)
	alphabet := []string{"a", `\`, " ", ",", "=", `"`, "\t"}
	var names []string
	var gen func(prefix string, n int)
	gen = func(prefix string, n int) {
		if prefix != "" {
			names = append(names, prefix)
		}
		if n > 0 {
			for _, c := range alphabet {
				gen(prefix+c, n-1)
			}
		}
	}
	gen("", 3)
	// Only a backslash, a newline or a leading tab makes a name unfit.
	fit := func(n string) bool { return !strings.Contains(n, `\`) && n[0] != '\t' }
	recv := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	asKey, asTags := map[float64]string{}, map[float64]string{}
	for i, n := range names {
		// As a field key, beside one that is always stored.
		payload, _ := json.Marshal(map[string]float64{n: float64(i), "ok": 1})
		before := a.Stats().Skipped
		if err := a.Append(influx.Reading{Thing: fmt.Sprintf("k%d", i), Stream: "keys", Received: recv, Payload: payload}); err != nil {
			t.Fatalf("field key %q: %v", n, err)
		}
		if a.Stats().Skipped == before {
			asKey[float64(i)] = n // stored under a key that FieldOf maps back to n
		} else if fit(n) {
			t.Errorf("field key %q left out", n)
		}
		// As the stream and every tag.
		err := a.Append(influx.Reading{Thing: n, Stream: n, Owner: n, Kind: n, Place: n, Received: recv,
			Payload: fmt.Appendf(nil, `{"v":%d}`, i)})
		switch {
		case err == nil:
			asTags[float64(i)] = n
		case !errors.Is(err, influx.ErrNotAReading):
			t.Fatalf("%q: %v", n, err)
		case fit(n):
			t.Errorf("stream and tags %q refused: %v", n, err)
		}
	}
	drained(t, a)
	if len(asKey) < 200 || len(asTags) < 200 {
		t.Fatalf("only %d field keys and %d tag names of %d taken", len(asKey), len(asTags), len(names))
	}
	rows, err := a.Query(context.Background(), fmt.Sprintf(`from(bucket: %q) |> range(start: 2026-11-25T00:00:00Z, stop: 2026-11-26T00:00:00Z)`, a.Bucket()))
	if err != nil {
		t.Fatal(err)
	}
	gotKey, gotTags := map[float64]string{}, map[float64]string{}
	for _, r := range rows {
		v, _ := r["_value"].(float64)
		str := func(k string) string { s, _ := r[k].(string); return s }
		switch m := str("_measurement"); {
		case m == "keys" && str("_field") != "ok":
			gotKey[v], _ = influx.FieldOf(str("_field"), v)
		case str("_field") == "v":
			for _, tag := range []string{"thing", "owner", "kind", "place"} {
				if str(tag) != m {
					t.Errorf("measurement %q stored with %s %q", m, tag, r[tag])
				}
			}
			gotTags[v] = m
		}
	}
	for i, n := range asKey {
		if gotKey[i] != n {
			t.Errorf("field key %q stored as %q", n, gotKey[i])
		}
	}
	for i, n := range asTags {
		if gotTags[i] != n {
			t.Errorf("stream and tags %q stored as %q", n, gotTags[i])
		}
	}
	if len(gotKey) != len(asKey) || len(gotTags) != len(asTags) {
		t.Errorf("stored %d field keys and %d tag names, want %d and %d", len(gotKey), len(gotTags), len(asKey), len(asTags))
	}
	if st := a.Stats(); st.Rejected != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestBadLineLosesOnlyItself: a line that does not parse (here one an
// older Veil spooled: "+Inf") loses only itself, not the readings around
// it, and is counted as rejected. InfluxDB 1.8 writes the others and names
// the line; InfluxDB 2.x (emulated by a proxy in front of influxd 1.8)
// refuses the whole request, which is then split until the line is alone.
func TestBadLineLosesOnlyItself(t *testing.T) {
	proxy, err := influxtest.NewStrictProxy(server.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	for _, c := range []struct {
		name, url, bucket string
		refusedWhole      bool
	}{
		{"influxd 1.8 writes the rest", server.URL, "partial", false},
		{"InfluxDB 2.x refuses the request", proxy.URL, "strict", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			refused := proxy.Refused()
			// One batch: the writer waits for more while the readings go in.
			a := open(t, c.bucket, func(cfg *influx.Config) { cfg.URL, cfg.FlushInterval = c.url, time.Second })
			recv := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
			for i := range 41 {
				if i == 20 {
					if err := a.AppendLine([]byte("temperature,thing=mallory-1,owner=mallory t=+Inf 1795636800000000000\n")); err != nil {
						t.Fatal(err)
					}
				}
				if err := a.Append(influx.Reading{Thing: "thermo-1", Stream: "temperature", Owner: "an", Received: recv.Add(time.Duration(i) * time.Second),
					Payload: fmt.Appendf(nil, `{"temperature":%d}`, i)}); err != nil {
					t.Fatal(err)
				}
			}
			drained(t, a)
			if st := a.Stats(); st.Written != 41 || st.Rejected != 1 {
				t.Errorf("stats %+v, want 41 written and 1 rejected", st)
			}
			if c.refusedWhole && proxy.Refused() == refused {
				t.Fatal("the proxy refused no request: the test tested nothing")
			}
			n := 0
			err = a.History(context.Background(), "thermo-1", "temperature", "an", recv, recv.Add(time.Hour), func(r influx.Row) bool {
				if r.Fields["temperature"] != float64(n) {
					t.Errorf("reading %d: %v", n, r.Fields)
				}
				n++
				return true
			})
			if err != nil || n != 41 {
				t.Fatalf("%d readings in history (%v), want all 41", n, err)
			}
		})
	}
}

// TestHistoryOnlyUnderTheOwner (review): a thing id's archive holds the
// readings of every holder it had: the installer's (no owner yet), then
// An's after the hand-over, then Bob's after An deleted the thing and its
// id was created again for him. History under an owner returns only the
// readings archived under that owner.
func TestHistoryOnlyUnderTheOwner(t *testing.T) {
	a := open(t, "owners", nil)
	recv := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	owners := []string{"", "", "an", "an", "an", `bo"b`}
	for i, owner := range owners {
		if err := a.Append(influx.Reading{Thing: "cam-1", Stream: "motion", Owner: owner, Received: recv.Add(time.Duration(i) * time.Second),
			Payload: fmt.Appendf(nil, `{"n":%d}`, i)}); err != nil {
			t.Fatal(err)
		}
	}
	drained(t, a)
	for _, c := range []struct {
		owner string
		want  []float64
	}{
		{"", []float64{0, 1}},
		{"an", []float64{2, 3, 4}},
		{`bo"b`, []float64{5}},
		{"mallory", nil},
	} {
		var got []float64
		err := a.History(context.Background(), "cam-1", "motion", c.owner, recv, recv.Add(time.Minute), func(r influx.Row) bool {
			got = append(got, r.Fields["n"].(float64))
			return true
		})
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("owner %q: %v (%v), want %v", c.owner, got, err, c.want)
		}
	}
}

// TestLatest: the latest reading before a time, however long before,
// under its owner only, whole (every field of it); none before the first.
func TestLatest(t *testing.T) {
	a := open(t, "latest", nil)
	recv := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	for i, r := range []struct {
		owner string
		ago   time.Duration
		body  string
	}{
		{"an", 400 * 24 * time.Hour, `{"private":true,"note":"set"}`},
		{"an", time.Hour, `{"private":false}`},
		{"mallory", 30 * time.Minute, `{"private":true}`},
	} {
		if err := a.Append(influx.Reading{Thing: "hub-1", Stream: "ctl", Owner: r.owner, Received: recv.Add(-r.ago), Payload: []byte(r.body)}); err != nil {
			t.Fatal(i, err)
		}
	}
	drained(t, a)
	for _, c := range []struct {
		owner  string
		before time.Time
		want   map[string]any // nil: none
	}{
		{"an", recv, map[string]any{"private": false}},
		{"an", recv.Add(-2 * time.Hour), map[string]any{"private": true, "note": "set"}}, // over a year before
		{"an", recv.Add(-400 * 24 * time.Hour), nil},                                     // before is exclusive
		{"mallory", recv, map[string]any{"private": true}},
		{"bob", recv, nil},
	} {
		r, ok, err := a.Latest(context.Background(), "hub-1", "ctl", c.owner, c.before)
		if err != nil || ok != (c.want != nil) || ok && !reflect.DeepEqual(r.Fields, c.want) {
			t.Errorf("owner %q before %s: %v %v %v, want %v", c.owner, c.before, r.Fields, ok, err, c.want)
		}
	}
}
