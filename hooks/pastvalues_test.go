package hooks

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/veil-iot/veil/policies"
)

// streamArchive is an archive in memory of several streams, by
// "thing/stream", each oldest first; it counts the queries per stream.
type streamArchive struct {
	streams map[string]archived
	queries map[string]int
	rows    int    // readings handed out
	down    string // a stream whose queries fail
}

func (a *streamArchive) History(ctx context.Context, thing, stream string, from, to time.Time, fn func(time.Time, []byte) bool) error {
	a.queries[thing+"/"+stream]++
	if thing+"/"+stream == a.down {
		return errors.New("connection refused")
	}
	return a.streams[thing+"/"+stream].History(ctx, thing, stream, from, to, func(t time.Time, b []byte) bool {
		a.rows++
		return fn(t, b)
	})
}

// lastArchive is a streamArchive that finds a stream's latest reading
// before a time in one query, as the real archive does (LatestSource).
type lastArchive struct{ *streamArchive }

func (a lastArchive) Latest(_ context.Context, thing, stream string, before time.Time) (time.Time, []byte, bool, error) {
	a.queries[thing+"/"+stream]++
	if thing+"/"+stream == a.down {
		return time.Time{}, nil, false, errors.New("connection refused")
	}
	var last struct {
		t    time.Time
		data string
	}
	found := false
	for _, r := range a.streams[thing+"/"+stream] {
		if r.t.Before(before) {
			last, found = r, true
		}
	}
	if found {
		a.rows++
	}
	return last.t, []byte(last.data), found, nil
}

// TestHistoryDataConditionsReadTheValuesOfThen: a policy whose condition
// reads live data (data.*) decides each archived reading with the values
// that were latest at its time, as it decided the live delivery of it,
// not with today's: an emergency grant (heart rate over 140) releases the
// locations taken during the emergency, not the whole archive because
// the wearer's heart races now; a privacy switch withholds what was taken
// while it was on, though it is off now. A value holds however long
// before the reading it was taken (the next day's reading reads it), as
// a stream's latest reading holds live.
func TestHistoryDataConditionsReadTheValuesOfThen(t *testing.T) {
	at := func(s string) time.Time { t, _ := time.Parse(time.RFC3339, "2026-11-26T"+s+"Z"); return t }
	location := `{"lat":52.1,"lon":4.3}`
	for _, tc := range []struct {
		name     string
		policies []string
		values   archived // the watch's "ctl" stream
		now      string   // its live value
		want     []string
	}{
		{"emergency grant", []string{
			`{"id":"emergency","priority":1,"effect":"allow","subjects":["user:doctor"],"resources":["things/watch-1/data/location"],
			  "actions":["history"],"when":{"attr":"data.watch-1.ctl.rate","op":"gt","value":140}}`},
			archived{{at("10:00:00"), `{"rate":80}`}, {at("10:30:00"), `{"rate":150}`}, {at("10:40:00"), `{"rate":90}`}, {at("11:00:00"), `{"rate":160}`}},
			`{"rate":170}`,
			[]string{"10:30:00", "10:35:00", "11:00:00", "12:00:00", "next day"}},
		{"privacy switch", []string{
			`{"id":"private","priority":1,"effect":"deny","subjects":["user:doctor"],"resources":["things/watch-1/data/location"],
			  "actions":["history"],"when":{"attr":"data.watch-1.ctl.private","op":"eq","value":true}}`,
			`{"id":"doctor","priority":2,"effect":"allow","subjects":["user:doctor"],"resources":["things/watch-1/data/location"],"actions":["history"]}`},
			archived{{at("10:00:00"), `{"private":false}`}, {at("10:30:00"), `{"private":true}`}, {at("10:40:00"), `{"private":false}`}},
			`{"private":false}`,
			// Before the first value nothing is private.
			[]string{"09:00:00", "10:10:00", "10:40:00", "11:00:00", "12:00:00", "next day"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			live := NewLiveValues()
			live.Observe("things/watch-1/data/ctl", []byte(tc.now))
			clock := &settableClock{}
			clock.Set(at("12:00:00").Add(48 * time.Hour))
			e := policies.NewEngine(policies.Options{Secret: []byte("test"), Clock: clock, Context: live})
			for _, u := range []string{"an", "doctor"} {
				if err := e.PutUser(policies.User{Name: u}); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.PutThing(policies.Thing{ID: "watch-1", Owner: "an", Kind: "wearable", Streams: []string{"location", "ctl"}}); err != nil {
				t.Fatal(err)
			}
			for _, doc := range tc.policies {
				p, err := policies.ParsePolicy([]byte(doc))
				if err != nil {
					t.Fatal(err)
				}
				if err := e.PutPolicy("an", p); err != nil {
					t.Fatal(err)
				}
			}
			var locations archived
			for _, s := range []string{"09:00:00", "10:10:00", "10:30:00", "10:35:00", "10:40:00", "11:00:00", "12:00:00"} {
				locations = append(locations, archived{{at(s), location}}...)
			}
			// A day and a minute after the last value.
			last := tc.values[len(tc.values)-1].t.Add(24*time.Hour + time.Minute)
			locations = append(locations, archived{{last, location}}...)
			archive := &streamArchive{streams: map[string]archived{"watch-1/location": locations, "watch-1/ctl": tc.values}, queries: map[string]int{}}
			h := NewHistory(HistoryConfig{Engine: e, Source: archive, Clock: clock})
			res, _ := policies.ParseTopic("things/watch-1/data/location")
			q := query{principal: policies.UserPrincipal("doctor"), resource: "things/watch-1/data/location", res: res,
				from: at("00:00:00"), to: clock.Now(), limit: 100}
			var got []string
			if _, err := h.walk(context.Background(), q, func(t time.Time, _ []byte, _ *policies.Decision) {
				if t.Day() == 26 {
					got = append(got, t.Format("15:04:05"))
				} else {
					got = append(got, "next day")
				}
			}); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestHistoryLoadsLiveValuesAhead: the values of a stream a condition
// reads are loaded an hour ahead, not once per reading decided.
func TestHistoryLoadsLiveValuesAhead(t *testing.T) {
	start, _ := time.Parse(time.RFC3339, "2026-11-26T00:00:00Z")
	var values, locations archived
	for i := range 3 * 60 {
		m := start.Add(time.Duration(i) * time.Minute)
		values = append(values, archived{{m, fmt.Sprintf(`{"rate":%d}`, 100+i%60)}}...)
		locations = append(locations, archived{{m.Add(30 * time.Second), `{"lat":52.1,"lon":4.3}`}}...)
	}
	live := NewLiveValues()
	live.Observe("things/watch-1/data/ctl", []byte(`{"rate":150}`))
	e := historyEngine(t, policies.Options{Secret: []byte("test"), Context: live}, []string{"an", "doctor"}, policies.Thing{ID: "watch-1", Owner: "an", Kind: "wearable", Streams: []string{"location", "ctl"}},
		`{"id":"emergency","priority":1,"effect":"allow","subjects":["user:doctor"],
		"resources":["things/watch-1/data/location"],"actions":["history"],"when":{"attr":"data.watch-1.ctl.rate","op":"gt","value":140}}`)
	archive := &streamArchive{streams: map[string]archived{"watch-1/location": locations, "watch-1/ctl": values}, queries: map[string]int{}}
	h := NewHistory(HistoryConfig{Engine: e, Source: archive})
	res, _ := policies.ParseTopic("things/watch-1/data/location")
	q := query{principal: policies.UserPrincipal("doctor"), resource: "things/watch-1/data/location", res: res,
		from: start, to: start.Add(3 * time.Hour), limit: 1000}
	n := 0
	if _, err := h.walk(context.Background(), q, func(time.Time, []byte, *policies.Decision) { n++ }); err != nil {
		t.Fatal(err)
	}
	// Rates 141…159 of each hour's 100…159.
	if n != 3*19 {
		t.Errorf("released %d locations, want %d", n, 3*19)
	}
	if got := archive.queries["watch-1/ctl"]; got < 3 || got > 4 {
		t.Errorf("%d queries of the values for three hours of readings, want 3 or 4", got)
	}

	// Values the archive cannot give fail the answer: no reading is
	// decided without them.
	archive.down = "watch-1/ctl"
	n = 0
	if _, err := h.walk(context.Background(), q, func(time.Time, []byte, *policies.Decision) { n++ }); err == nil || n != 0 {
		t.Errorf("with the values' archive down: %d released, error %v", n, err)
	}
}

// TestHistoryValueHeldOverADay: a privacy switch that reports when it
// changes ({"private":true} once, then nothing for a day) withholds every
// live delivery while it is on, however long ago it reported; history
// reads it so too, from a source that finds the latest reading in one
// query and from one read from its beginning alike.
func TestHistoryValueHeldOverADay(t *testing.T) {
	day1 := time.Date(2026, 11, 26, 10, 30, 0, 0, time.UTC)
	later := day1.Add(25 * time.Hour) // the switch is still on
	for _, last := range []bool{false, true} {
		t.Run(fmt.Sprintf("latest in one query %v", last), func(t *testing.T) {
			live := NewLiveValues()
			live.Observe("things/watch-1/data/ctl", []byte(`{"private":false}`)) // off again now
			clock := &settableClock{}
			clock.Set(later.Add(time.Hour))
			e := historyEngine(t, policies.Options{Secret: []byte("test"), Clock: clock, Context: live}, []string{"an", "doctor"}, policies.Thing{ID: "watch-1", Owner: "an", Kind: "wearable", Streams: []string{"location", "ctl"}},
				`{"id":"private","priority":1,"effect":"deny","subjects":["user:doctor"],"resources":["things/watch-1/data/location"],
				  "actions":["history"],"when":{"attr":"data.watch-1.ctl.private","op":"eq","value":true}}`,
				`{"id":"doctor","priority":2,"effect":"allow","subjects":["user:doctor"],"resources":["things/watch-1/data/location"],"actions":["history"]}`)
			archive := &streamArchive{streams: map[string]archived{
				"watch-1/ctl":      {{day1, `{"private":true}`}, {later.Add(30 * time.Minute), `{"private":false}`}},
				"watch-1/location": {{day1.Add(5 * time.Minute), `{"lat":1}`}, {later, `{"lat":2}`}, {later.Add(45 * time.Minute), `{"lat":3}`}},
			}, queries: map[string]int{}}
			var source HistorySource = archive
			if last {
				source = lastArchive{archive}
			}
			h := NewHistory(HistoryConfig{Engine: e, Source: source, Clock: clock})
			res, _ := policies.ParseTopic("things/watch-1/data/location")
			q := query{principal: policies.UserPrincipal("doctor"), resource: "things/watch-1/data/location", res: res,
				from: day1.Add(-time.Hour), to: clock.Now(), limit: 100}
			var got []time.Time
			if _, err := h.walk(context.Background(), q, func(ts time.Time, _ []byte, _ *policies.Decision) { got = append(got, ts) }); err != nil {
				t.Fatal(err)
			}
			if want := []time.Time{later.Add(45 * time.Minute)}; !slices.EqualFunc(got, want, time.Time.Equal) {
				t.Errorf("released %v, want %v (the switch was on from %s to %s)", got, want, day1, later.Add(30*time.Minute))
			}
		})
	}
}

// TestHistoryValueBeforeAReadingIsOneQuery: the value latest before a
// reading is found in one query, not by reading the condition's stream
// back to it: three readings, a day apart, over a stream taking one value
// a second read a load's bound each, not the days between.
func TestHistoryValueBeforeAReadingIsOneQuery(t *testing.T) {
	day := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	values := make(archived, 0, 3*86400)
	for i := range 3 * 86400 {
		values = append(values, archived{{day.Add(time.Duration(i) * time.Second), `{"rate":150}`}}...)
	}
	var locations archived
	for d := range 3 {
		locations = append(locations, archived{{day.Add(time.Duration(d)*24*time.Hour + 23*time.Hour + 30*time.Minute), `{"lat":1}`}}...)
	}
	live := NewLiveValues()
	live.Observe("things/watch-1/data/ctl", []byte(`{"rate":150}`))
	e := historyEngine(t, policies.Options{Secret: []byte("test"), Context: live}, []string{"an", "doctor"}, policies.Thing{ID: "watch-1", Owner: "an", Kind: "wearable", Streams: []string{"location", "ctl"}},
		`{"id":"emergency","priority":1,"effect":"allow","subjects":["user:doctor"],
		"resources":["things/watch-1/data/location"],"actions":["history"],"when":{"attr":"data.watch-1.ctl.rate","op":"gt","value":140}}`)
	archive := &streamArchive{streams: map[string]archived{"watch-1/location": locations, "watch-1/ctl": values}, queries: map[string]int{}}
	h := NewHistory(HistoryConfig{Engine: e, Source: lastArchive{archive}})
	res, _ := policies.ParseTopic("things/watch-1/data/location")
	q := query{principal: policies.UserPrincipal("doctor"), resource: "things/watch-1/data/location", res: res,
		from: day, to: day.Add(72 * time.Hour), limit: 100}
	n := 0
	if _, err := h.walk(context.Background(), q, func(time.Time, []byte, *policies.Decision) { n++ }); err != nil {
		t.Fatal(err)
	}
	if n != 3 || archive.rows > 3*(pastValuesMax+2)+3 {
		t.Errorf("%d readings released, %d rows read to decide them (want 3, at most %d)", n, archive.rows, 3*(pastValuesMax+2)+3)
	}
}
