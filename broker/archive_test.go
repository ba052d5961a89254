package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
)

func drainArchive(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := archiving(t).DrainArchive(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestArchiveReadingsArriveInInfluxDB(t *testing.T) {
	b := archiving(t)
	pump := dialAt(t, b.Addr("mqtt"), "pump-1", "pump-1-secret", "pump-1", "")
	start := time.Now()
	if code := pump.pub("things/pump-1/data/flow", `{"flow":12.5,"on":true,"mode":"eco","pipe":{"bar":1.2}}`, 1); code != 0 {
		t.Fatalf("PUBACK 0x%02x", code)
	}
	// A reading's own ts, whatever it says, is a field: the reading is
	// archived at the time the broker took it.
	pump.pub("things/pump-1/data/flow", `{"flow":13,"ts":"2026-01-02T03:04:05.678Z"}`, 0)
	pump.pub("things/pump-1/data/flow", `{"flow":14,"ts":1767323045000}`, 1)
	drainArchive(t)
	end := time.Now()

	cl := influxdb2.NewClient(influxd(t).URL, "")
	defer cl.Close()
	res, err := cl.QueryAPI("").Query(context.Background(), fmt.Sprintf(`from(bucket: "veil_e2e/")
		|> range(start: 2000-01-01T00:00:00Z, stop: 2100-01-01T00:00:00Z)
		|> filter(fn: (r) => r._measurement == "flow" and r.thing == "pump-1" and r._time >= %s and r._time <= %s)`,
		start.UTC().Format(time.RFC3339Nano), end.UTC().Format(time.RFC3339Nano)))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	type row struct{ owner, kind, place, field string }
	byTime := map[time.Time]map[row]any{}
	for res.Next() {
		r := res.Record()
		tag := func(k string) string { s, _ := r.ValueByKey(k).(string); return s }
		if byTime[r.Time()] == nil {
			byTime[r.Time()] = map[row]any{}
		}
		byTime[r.Time()][row{tag("owner"), tag("kind"), tag("place"), r.Field()}] = r.Value()
	}
	if res.Err() != nil {
		t.Fatal(res.Err())
	}
	var times []time.Time
	for ts := range byTime {
		times = append(times, ts)
	}
	slices.SortFunc(times, time.Time.Compare)
	tags := func(f string) row { return row{"an", "sensor", "", f} }
	want := []map[row]any{
		{tags("flow"): 12.5, tags("on:bool"): true, tags("mode:str"): "eco", tags("pipe.bar"): 1.2},
		{tags("flow"): 13.0, tags("ts:str"): "2026-01-02T03:04:05.678Z"},
		{tags("flow"): 14.0, tags("ts"): 1767323045000.0},
	}
	if len(times) != len(want) {
		t.Fatalf("%d points between %s and %s, want %d: %v", len(times), start, end, len(want), byTime)
	}
	for i, ts := range times {
		if !reflect.DeepEqual(byTime[ts], want[i]) {
			t.Errorf("point %d at %s: %v, want %v", i, ts, byTime[ts], want[i])
		}
	}
}

// jsonEqual compares two JSON objects by value.
func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

// TestHistoryAnswersLikeLiveDeliveries: each requester's history holds
// exactly what it received live — owner raw, doctor rounded, ruth without
// the out-of-range readings, the nurse (one a second) the first reading of
// each second, the stranger nothing but a clear refusal. Under a rate live
// and history release the same readings, so together they give no more.
func TestHistoryAnswersLikeLiveDeliveries(t *testing.T) {
	b := archiving(t)
	addr := b.Addr("mqtt")
	type requester struct {
		user, purpose string
		c             *mqttClient
	}
	who := map[string]*requester{
		"an": {user: "an"}, "doctor": {user: "doctor", purpose: "diagnosis"}, "ruth": {user: "ruth"},
		"nurse": {user: "nurse"}, "stranger": {user: "stranger"},
	}
	for _, r := range who {
		r.c = dialAt(t, addr, r.user, r.user+"-pass", r.user+"-hist", "")
		r.c.sub("$config/replies/"+r.c.id+"/#", "")
	}
	streams := []struct {
		topic    string
		thing    string
		readings []string
		gap      time.Duration
		live     []string // who may subscribe
	}{
		{"things/thermo-1/data/temperature", "thermo-1", []string{`{"temperature":21.37,"humidity":40.2}`, `{"temperature":19.04}`, `{"temperature":23.45,"note":"sunny"}`}, 0,
			[]string{"an", "doctor"}},
		{"things/watch-1/data/location", "watch-1", []string{`{"lat":48.7758,"lon":9.1829}`, `{"lat":48.78,"lon":9.18,"alt":{"m":250.5}}`}, 0,
			[]string{"an", "doctor"}},
		{"things/watch-1/data/heart_rate", "watch-1", []string{`{"bpm":35}`, `{"bpm":80}`, `{"bpm":130}`, `{"bpm":100}`, `{"bpm":90}`, `{"bpm":60}`}, 400 * time.Millisecond,
			[]string{"an", "ruth", "nurse"}},
	}
	for _, s := range streams {
		for _, u := range s.live {
			who[u].c.sub(s.topic, who[u].purpose)
		}
	}
	// The stranger's subscriptions are refused, which is its live view.
	if code := who["stranger"].c.subscribeCode("things/thermo-1/data/temperature"); code != 0x87 {
		t.Fatalf("stranger subscribe: 0x%02x", code)
	}

	start := time.Now().Add(-time.Second)
	things := map[string]*mqttClient{}
	for _, s := range streams {
		th := things[s.thing]
		if th == nil {
			th = dialAt(t, addr, s.thing, s.thing+"-secret", s.thing, "")
			things[s.thing] = th
		}
		for _, p := range s.readings {
			th.pub(s.topic, p, 1)
			time.Sleep(s.gap)
		}
	}
	time.Sleep(300 * time.Millisecond) // live deliveries settle
	drainArchive(t)
	end := time.Now().Add(time.Second)

	// Live: what each requester received, per topic.
	live := map[string]map[string][][]byte{}
	for name, r := range who {
		live[name] = map[string][][]byte{}
	collect:
		for {
			select {
			case m := <-r.c.msgs:
				live[name][m.Topic] = append(live[name][m.Topic], m.Payload)
			default:
				break collect
			}
		}
	}
	body := fmt.Sprintf(`{"from":%q,"to":%q}`, start.UTC().Format(time.RFC3339Nano), end.UTC().Format(time.RFC3339Nano))
	// The nurse's history: the owner's, the first reading of each second
	// of reading time (buckets aligned to the Unix epoch).
	var perSecond [][]byte
	seconds := map[int64]bool{}
	for _, p := range who["an"].c.history("$history/things/watch-1/data/heart_rate", body, "", "") {
		for _, rd := range p.Readings {
			ts, err := time.Parse(time.RFC3339Nano, rd.TS)
			if err != nil {
				t.Fatal(err)
			}
			if !seconds[ts.Unix()] {
				seconds[ts.Unix()] = true
				perSecond = append(perSecond, rd.Data)
			}
		}
	}
	if len(perSecond) < 2 || len(perSecond) > 5 {
		t.Fatalf("6 readings 400 ms apart fall into %d seconds", len(perSecond))
	}
	if nurse := live["nurse"]["things/watch-1/data/heart_rate"]; len(nurse) != len(perSecond) {
		t.Fatalf("the nurse received %s live, want the first reading of each second %s", nurse, perSecond)
	} else {
		for i := range nurse {
			if !jsonEqual(t, nurse[i], perSecond[i]) {
				t.Fatalf("the nurse received %s live, want the first reading of each second %s", nurse, perSecond)
			}
		}
	}
	for _, s := range streams {
		for name, r := range who {
			t.Run(name+" "+s.topic, func(t *testing.T) {
				pages := r.c.history("$history/"+s.topic, body, r.purpose, "")
				got, from := live[name][s.topic], "live delivered"
				last := pages[len(pages)-1]
				if len(got) == 0 {
					// Nothing live: the history request is refused, clearly.
					if last.OK || !strings.Contains(last.Error, "not allowed") {
						t.Fatalf("history %+v, want a refusal (live got nothing)", pages)
					}
					return
				}
				if !last.OK {
					t.Fatalf("history refused: %s (live got %d)", last.Error, len(got))
				}
				var hist [][]byte
				for i, p := range pages {
					if p.Page != i+1 || p.Topic != "$history/"+s.topic {
						t.Fatalf("page %d: %+v", i+1, p)
					}
					for _, rd := range p.Readings {
						hist = append(hist, rd.Data)
					}
				}
				if len(hist) != len(got) {
					t.Fatalf("history has %d readings %s, %s %d %s", len(hist), hist, from, len(got), got)
				}
				for i := range got {
					if !jsonEqual(t, hist[i], got[i]) {
						t.Errorf("reading %d: history %s, %s %s", i, hist[i], from, got[i])
					}
				}
			})
		}
	}
	// Sanity: the matrix is not trivially equal.
	if len(live["ruth"]["things/watch-1/data/heart_rate"]) != 4 || len(live["nurse"]["things/watch-1/data/heart_rate"]) >= 6 ||
		len(live["nurse"]["things/watch-1/data/heart_rate"]) < 2 || string(live["doctor"]["things/thermo-1/data/temperature"][0]) != `{"temperature":21.4,"humidity":40.2}` {
		t.Fatalf("unexpected live deliveries: ruth %s, nurse %s, doctor %s", live["ruth"]["things/watch-1/data/heart_rate"],
			live["nurse"]["things/watch-1/data/heart_rate"], live["doctor"]["things/thermo-1/data/temperature"])
	}
	// The doctor without the declared purpose gets no location history.
	pages := who["doctor"].c.history("$history/things/watch-1/data/location", body, "", "")
	if pages[0].OK || !strings.Contains(pages[0].Error, "not allowed") {
		t.Fatalf("doctor without purpose: %+v", pages)
	}
}

func (c *mqttClient) subscribeCode(filter string) byte {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, pahoSubscribe{filter}.packet())
	if sa != nil {
		return sa.Reasons[0]
	}
	c.t.Fatalf("subscribe %s: %v", filter, err)
	return 0
}

func TestHistoryPagesAndLimit(t *testing.T) {
	b := archiving(t)
	an := dialAt(t, b.Addr("mqtt"), "an", "an-pass", "an-pages", "")
	an.sub("$config/replies/an-pages/#", "")
	pump := dialAt(t, b.Addr("mqtt"), "pump-1", "pump-1-secret", "pump-1", "")
	// Readings are archived at the time the broker takes them: one before
	// the window, then 1200 in it.
	pump.pub("things/pump-1/data/flow", `{"flow":-1}`, 1)
	time.Sleep(10 * time.Millisecond)
	start := time.Now()
	for i := range 1200 {
		pump.pub("things/pump-1/data/flow", fmt.Sprintf(`{"flow":%d}`, i), 0)
	}
	pump.pub("things/pump-1/data/flow", `{"flow":1200}`, 1)
	drainArchive(t)
	end := time.Now()
	time.Sleep(10 * time.Millisecond)
	pump.pub("things/pump-1/data/flow", `{"flow":-1}`, 1) // after the window
	drainArchive(t)
	from, to := start.UTC().Format(time.RFC3339Nano), end.UTC().Format(time.RFC3339Nano)

	pages := an.history("$history/things/pump-1/data/flow", fmt.Sprintf(`{"from":%q,"to":%q,"limit":1100}`, from, to), "", "")
	n := 0
	var last time.Time
	for i, p := range pages {
		if !p.OK || p.Page != i+1 || p.More != (i < len(pages)-1) {
			t.Fatalf("page %d: ok=%v page=%d more=%v", i+1, p.OK, p.Page, p.More)
		}
		for _, r := range p.Readings {
			var v struct{ Flow float64 }
			json.Unmarshal(r.Data, &v)
			if int(v.Flow) != n {
				t.Fatalf("reading %d has flow %v", n, v.Flow)
			}
			if last, _ = time.Parse(time.RFC3339Nano, r.TS); last.Before(start) || last.After(end) {
				t.Fatalf("reading %d at %s, outside [%s, %s]", n, r.TS, from, to)
			}
			n++
		}
	}
	if n != 1100 || len(pages) < 3 {
		t.Fatalf("%d readings in %d pages, want 1100 in at least 3", n, len(pages))
	}
	next, err := time.Parse(time.RFC3339Nano, pages[len(pages)-1].Next)
	if err != nil || !next.After(last) {
		t.Fatalf("next = %q, want the time of the reading after %s", pages[len(pages)-1].Next, last.Format(time.RFC3339Nano))
	}
	// Continuing from next returns the rest and no further cursor.
	rest := an.history("$history/things/pump-1/data/flow", fmt.Sprintf(`{"from":%q,"to":%q}`, pages[len(pages)-1].Next, to), "", "")
	for _, p := range rest {
		for _, r := range p.Readings {
			var v struct{ Flow float64 }
			json.Unmarshal(r.Data, &v)
			if int(v.Flow) != n {
				t.Fatalf("reading %d has flow %v", n, v.Flow)
			}
			n++
		}
	}
	if n != 1201 || rest[len(rest)-1].Next != "" {
		t.Fatalf("rest: up to reading %d, next %q; want 101 more and no next", n, rest[len(rest)-1].Next)
	}
	// An empty window is one empty page.
	empty := an.history("$history/things/pump-1/data/flow", `{"from":"2020-01-01T00:00:00Z","to":"2020-01-02T00:00:00Z"}`, "", "")
	if len(empty) != 1 || !empty[0].OK || len(empty[0].Readings) != 0 || empty[0].More {
		t.Fatalf("empty window: %+v", empty)
	}
}

func TestHistoryMalformedRequestsGetClearErrors(t *testing.T) {
	b := archiving(t)
	an := dialAt(t, b.Addr("mqtt"), "an", "an-pass", "an-bad", "")
	an.sub("$config/replies/an-bad/#", "")
	const topic = "$history/things/thermo-1/data/temperature"
	for _, c := range []struct{ name, topic, body, respTopic, want string }{
		{"not JSON", topic, `from yesterday`, "", "request: want a JSON object"},
		{"not an object", topic, `[1]`, "", "request: want a JSON object"},
		{"bad from", topic, `{"from":"yesterday"}`, "", `from: "yesterday" is not an RFC 3339 time`},
		{"bad to", topic, `{"to":"2026-13-01T00:00:00Z"}`, "", `to: "2026-13-01T00:00:00Z" is not an RFC 3339 time`},
		{"from as number", topic, `{"from":5}`, "", "from: want a string"},
		{"to before from", topic, `{"from":"2026-11-25T10:00:00Z","to":"2026-11-25T09:00:00Z"}`, "", "to: must be after from"},
		{"to past the archive's range", topic, `{"to":"2300-01-01T00:00:00Z"}`, "", `to: "2300-01-01T00:00:00Z" is outside the archive's time range`},
		{"from before the archive's range", topic, `{"from":"1600-01-01T00:00:00Z","to":"2026-11-25T09:00:00Z"}`, "", `from: "1600-01-01T00:00:00Z" is outside the archive's time range`},
		{"limit zero", topic, `{"limit":0}`, "", "limit: must be a whole number from 1 to 10000"},
		{"limit too big", topic, `{"limit":10001}`, "", "limit: must be a whole number from 1 to 10000"},
		{"limit fraction", topic, `{"limit":2.5}`, "", "limit: must be a whole number from 1 to 10000"},
		{"unknown key", topic, `{"form":"2026-11-25T10:00:00Z"}`, "", `unknown key "form"`},
		{"trailing data", topic, `{} {}`, "", "trailing data"},
		{"not a data topic", "$history/things/thermo-1/state", `{}`, "", "want $history/things/{thing}/data/{stream}"},
		{"wildcard-free garbage topic", "$history/whatever", `{}`, "", "want $history/things/{thing}/data/{stream}"},
		{"unknown thing", "$history/things/nope/data/x", `{}`, "", "not allowed"},
		{"foreign response topic", topic, `{}`, "$config/replies/someone-else", `response topic "$config/replies/someone-else": must be $config/replies/an-bad`},
		{"response topic outside replies", topic, `{}`, "things/thermo-1/data/temperature", "must be $config/replies/an-bad"},
	} {
		t.Run(c.name, func(t *testing.T) {
			pages := an.history(c.topic, c.body, "", c.respTopic)
			if len(pages) != 1 || pages[0].OK || !strings.Contains(pages[0].Error, c.want) {
				t.Fatalf("answer %+v, want an error containing %q", pages, c.want)
			}
		})
	}
	// Nobody may subscribe to $history, and a request is not retained.
	if code := an.subscribeCode("$history/#"); code != 0x87 {
		t.Fatalf("subscribe $history/#: 0x%02x", code)
	}
	if _, ok := b.MQTT.Topics.Retained.Get(topic); ok {
		t.Fatal("a history request was retained")
	}
}

// TestHistoryDataConditionsAsOfEachReading: through the real archive, a
// history policy whose condition reads live data releases the readings
// taken while it held, with the values archived then, not all of them
// because it holds now.
func TestHistoryDataConditionsAsOfEachReading(t *testing.T) {
	b := archiving(t)
	boiler := dialAt(t, b.Addr("mqtt"), "boiler-1", "boiler-1-secret", "boiler-1", "")
	// Readings are archived at the time the broker takes them, in the
	// order published (each acknowledged before the next).
	start := time.Now()
	for _, r := range []struct{ topic, payload string }{
		{"alarm", `{"on":false}`},
		{"temperature", `{"temperature":61}`},
		{"alarm", `{"on":true}`},
		{"temperature", `{"temperature":92}`},
		{"alarm", `{"on":false}`},
		{"temperature", `{"temperature":63}`},
		{"alarm", `{"on":true}`}, // the alarm holds now
	} {
		if code := boiler.pub("things/boiler-1/data/"+r.topic, r.payload, 1); code != 0 {
			t.Fatalf("publish %s: 0x%02x", r.payload, code)
		}
		time.Sleep(5 * time.Millisecond)
	}
	drainArchive(t)
	nurse := dialAt(t, b.Addr("mqtt"), "nurse", "nurse-pass", "nurse-boiler", "")
	nurse.sub("$config/replies/"+nurse.id+"/#", "")
	pages := nurse.history("$history/things/boiler-1/data/temperature", fmt.Sprintf(`{"from":%q}`, start.UTC().Format(time.RFC3339Nano)), "", "")
	var got []string
	for _, p := range pages {
		if !p.OK {
			t.Fatalf("history refused: %s", p.Error)
		}
		for _, rd := range p.Readings {
			got = append(got, string(rd.Data))
		}
	}
	if len(got) != 1 || !jsonEqual(t, []byte(got[0]), []byte(`{"temperature":92}`)) {
		t.Fatalf("the nurse got %s, want only the reading taken during the alarm", got)
	}
}
