package hooks

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/veil-iot/veil/policies"
)

func TestHistoryRequestBody(t *testing.T) {
	now := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	at := func(s string) time.Time { t, _ := time.Parse(time.RFC3339Nano, s); return t }
	for _, c := range []struct {
		body     string
		from, to time.Time
		limit    int
		err      string
	}{
		{body: ``, from: now.Add(-DefaultHistoryWindow), to: now, limit: DefaultHistoryLimit},
		{body: `{}`, from: now.Add(-DefaultHistoryWindow), to: now, limit: DefaultHistoryLimit},
		{body: `{"from":"2026-11-25T18:00:00Z","to":"2026-11-25T19:00:00.5+01:00","limit":10}`,
			from: at("2026-11-25T18:00:00Z"), to: at("2026-11-25T18:00:00.5Z"), limit: 10},
		{body: `{"to":"2026-11-24T00:00:00Z"}`, from: at("2026-11-23T00:00:00Z"), to: at("2026-11-24T00:00:00Z"), limit: DefaultHistoryLimit},
		{body: `{"limit":10000}`, from: now.Add(-DefaultHistoryWindow), to: now, limit: MaxHistoryLimit},
		{body: `{"limit":1e2}`, from: now.Add(-DefaultHistoryWindow), to: now, limit: 100},
		{body: `{"limit":-1}`, err: "limit: must be a whole number from 1 to 10000"},
		{body: `{"limit":"5"}`, err: "limit: want a number"},
		{body: `{"from":"2026-11-25"}`, err: `from: "2026-11-25" is not an RFC 3339 time`},
		{body: `{"from":"2026-11-25T21:00:00Z"}`, err: "to: must be after from"},
		{body: `{"until":"x"}`, err: `unknown key "until"`},
		{body: `null`, from: now.Add(-DefaultHistoryWindow), to: now, limit: DefaultHistoryLimit},
		{body: `"x"`, err: "request: want a JSON object"},
		{body: `{"from":`, err: "request: want a JSON object"},
		// Times InfluxDB cannot hold are refused here, naming the field,
		// not passed on to fail there.
		{body: `{"to":"2262-04-12T00:00:00Z"}`, err: `to: "2262-04-12T00:00:00Z" is outside the archive's time range, 1677-09-21T00:12:44Z to 2262-04-11T23:47:16Z`},
		{body: `{"to":"9999-12-31T23:59:59Z"}`, err: `to: "9999-12-31T23:59:59Z" is outside`},
		{body: `{"from":"2026-11-25T00:00:00Z","to":"2262-04-11T23:47:16.000000001Z"}`, err: "to: "},
		{body: `{"from":"1677-09-20T00:00:00Z","to":"2026-11-25T00:00:00Z"}`, err: `from: "1677-09-20T00:00:00Z" is outside the archive's time range`},
		{body: `{"from":"0001-01-01T00:00:00Z"}`, err: `from: "0001-01-01T00:00:00Z" is outside`},
		{body: `{"from":"1677-09-21T00:12:43.999999999Z"}`, err: "from: "},
		{body: `{"from":"1677-09-21T00:12:44Z","to":"2262-04-11T23:47:16Z"}`, from: historyEarliest, to: historyLatest, limit: DefaultHistoryLimit},
		// The default from is cut to the range, not refused: the client did not choose it.
		{body: `{"to":"1677-09-21T12:00:00Z"}`, from: historyEarliest, to: at("1677-09-21T12:00:00Z"), limit: DefaultHistoryLimit},
	} {
		t.Run(c.body, func(t *testing.T) {
			var q query
			err := q.parseBody([]byte(c.body), now)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !q.from.Equal(c.from) || !q.to.Equal(c.to) || q.limit != c.limit {
				t.Fatalf("from %s to %s limit %d; want %s %s %d", q.from, q.to, q.limit, c.from, c.to, c.limit)
			}
		})
	}
}

func TestHistoryTopicsRule(t *testing.T) {
	p := policies.UserPrincipal("an")
	var h HistoryTopics
	for _, c := range []struct {
		topic                        string
		pub, sub, deliver            bool
		handledPub, handledSub, hDel bool
	}{
		{"$history/things/t/data/s", true, false, false, true, true, true},
		{"$history/#", true, false, false, true, true, true},
		{"$history", false, false, false, false, true, false},
		{"$config/users/an/policies/x", false, false, false, false, false, false},
	} {
		hp, ap := h.MayPublish(nil, p, c.topic)
		hs, as := h.MaySubscribe(nil, p, c.topic)
		hd, ad := h.MayDeliver(nil, p, c.topic)
		if hp != c.handledPub || ap != c.pub || hs != c.handledSub || as != c.sub || hd != c.hDel || ad != c.deliver {
			t.Errorf("%s: publish %v/%v subscribe %v/%v deliver %v/%v", c.topic, hp, ap, hs, as, hd, ad)
		}
	}
}

// TestHistoryPeriodStart: a rate's buckets are aligned to the Unix epoch
// (not to time.Truncate's zero time, which differs for periods that do
// not divide a day), for any time and any period a Duration holds.
func TestHistoryPeriodStart(t *testing.T) {
	at := func(s string) time.Time { t, _ := time.Parse(time.RFC3339Nano, s); return t }
	epoch := time.Unix(0, 0).UTC()
	for _, c := range []struct {
		t      string
		period time.Duration
		want   time.Time
	}{
		{"2026-11-26T10:37:00Z", time.Hour, at("2026-11-26T10:00:00Z")},
		{"2026-11-26T10:00:00Z", time.Hour, at("2026-11-26T10:00:00Z")},                 // at a boundary: its own bucket
		{"2026-11-26T09:59:59.999999999Z", time.Hour, at("2026-11-26T09:00:00Z")},       // just before it
		{"2026-11-26T10:37:00+01:00", 24 * time.Hour, at("2026-11-26T00:00:00Z")},       // UTC days, whatever the zone
		{"2026-11-26T10:37:00Z", 7 * time.Hour, at("2026-11-26T07:00:00Z")},             // time.Truncate: 05:00
		{"2026-11-26T10:37:06.999999999Z", 7 * time.Second, at("2026-11-26T10:37:00Z")}, // 7 s divides no minute
		{"2026-11-26T10:37:00.123456789Z", time.Nanosecond, at("2026-11-26T10:37:00.123456789Z")},
		{"1969-12-31T23:59:59Z", 7 * time.Second, at("1969-12-31T23:59:53Z")}, // before the epoch
		{"0001-01-01T00:00:30Z", 7 * time.Second, at("0001-01-01T00:00:25Z")}, // beyond UnixNano
		{"9999-12-31T23:59:59Z", 7 * time.Hour, at("9999-12-31T18:00:00Z")},
		{"2026-11-26T10:37:00Z", 1 << 62, epoch},
		{"1900-01-01T00:00:00Z", 1 << 62, epoch.Add(-(1 << 62))},
	} {
		got := periodStart(at(c.t), c.period)
		if !got.Equal(c.want) {
			t.Errorf("periodStart(%s, %s) = %s, want %s", c.t, c.period, got.UTC().Format(time.RFC3339Nano), c.want.UTC().Format(time.RFC3339Nano))
		}
	}
	// Against big-number arithmetic, over the whole range of times.
	rng := rand.New(rand.NewPCG(1, 2))
	lo, hi := at("0001-01-01T00:00:00Z").Unix(), at("9999-12-31T23:59:59Z").Unix()
	for range 20000 {
		tm := time.Unix(lo+rng.Int64N(hi-lo), rng.Int64N(1e9)).UTC()
		period := time.Duration(1 + rng.Int64N(math.MaxInt64))
		if rng.IntN(2) == 0 {
			period = time.Duration(1 + rng.Int64N(int64(48*time.Hour)))
		}
		ns := new(big.Int).Mul(big.NewInt(tm.Unix()), big.NewInt(1e9))
		ns.Add(ns, big.NewInt(int64(tm.Nanosecond())))
		rem := new(big.Int).Mod(ns, big.NewInt(int64(period))) // Euclidean: 0 <= rem < period
		if want := tm.Add(-time.Duration(rem.Int64())); !periodStart(tm, period).Equal(want) {
			t.Fatalf("periodStart(%s, %d) = %s, want %s", tm.Format(time.RFC3339Nano), period, periodStart(tm, period), want)
		}
	}
}

// archived is an archive in memory: readings oldest first.
type archived []struct {
	t    time.Time
	data string
}

func (a archived) History(ctx context.Context, _, _ string, from, to time.Time, fn func(time.Time, []byte) bool) error {
	for _, r := range a {
		if !r.t.Before(from) && r.t.Before(to) && !fn(r.t, []byte(r.data)) {
			break
		}
	}
	return nil
}

// rateHistory is a History whose doctor may have thermo-1's temperature
// history under the constraints given, over archive.
func rateHistory(t *testing.T, archive HistorySource, constraints string) *History {
	t.Helper()
	e := policies.NewEngine(policies.Options{Secret: []byte("test")})
	if err := e.PutUser(policies.User{Name: "an"}); err != nil {
		t.Fatal(err)
	}
	if err := e.PutUser(policies.User{Name: "doctor"}); err != nil {
		t.Fatal(err)
	}
	if err := e.PutThing(policies.Thing{ID: "thermo-1", Owner: "an", Kind: "sensor", Streams: []string{"temperature"}}); err != nil {
		t.Fatal(err)
	}
	p, err := policies.ParsePolicy([]byte(`{"id":"doctor-rate","priority":0,"effect":"allow","subjects":["user:doctor"],
		"resources":["things/thermo-1/data/temperature"],"actions":["history"],"constraints":` + constraints + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.PutPolicy("an", p); err != nil {
		t.Fatal(err)
	}
	return NewHistory(HistoryConfig{Engine: e, Source: archive})
}

// walkTimes runs one query of the doctor's and returns the times of what
// it releases, and its next.
func walkTimes(t *testing.T, h *History, from, to time.Time, limit int) (got []time.Time, next time.Time) {
	t.Helper()
	res, _ := policies.ParseTopic("things/thermo-1/data/temperature")
	q := query{principal: policies.UserPrincipal("doctor"), resource: "things/thermo-1/data/temperature", res: res,
		from: from, to: to, limit: limit}
	next, err := h.walk(context.Background(), q, func(t time.Time, _ []byte, _ *policies.Decision) { got = append(got, t) })
	if err != nil {
		t.Fatal(err)
	}
	return got, next
}

// TestHistoryRateBuckets: under a rate a history answer releases the first
// reading of each period-long bucket of reading time (aligned to the Unix
// epoch) and only that, whatever from, to and limit the queries choose:
// asking again from just after a released reading, from inside a bucket,
// up to a to inside a bucket, or page by page by "next", releases no
// second reading of a bucket. A reading exactly at a boundary opens its
// bucket; a reading the view withholds takes its bucket all the same, as
// it does live.
func TestHistoryRateBuckets(t *testing.T) {
	at := func(s string) time.Time { t, _ := time.Parse(time.RFC3339Nano, "2026-11-26T"+s+"Z"); return t }
	times := func(ss ...string) []time.Time {
		var ts []time.Time
		for _, s := range ss {
			ts = append(ts, at(s))
		}
		return ts
	}
	var archive archived
	for i, s := range []string{"10:00:00", "10:10:00", "10:20:00", "10:30:00", "10:40:00", "10:50:00",
		"11:00:00", "11:30:00", "13:15:00", "13:45:00", "14:59:59.999999999", "15:00:00"} {
		archive = append(archive, struct {
			t    time.Time
			data string
		}{at(s), fmt.Sprintf(`{"temperature":%d}`, 20+i)})
	}
	type ask struct {
		from, to string
		limit    int
		want     []time.Time
		next     string
	}
	for _, c := range []struct {
		name        string
		constraints string
		asks        []ask
	}{
		{"one query", `[{"kind":"rate","seconds":3600}]`, []ask{
			{from: "09:00:00", to: "16:00:00", want: times("10:00:00", "11:00:00", "13:15:00", "14:59:59.999999999", "15:00:00")},
		}},
		{"from moving past each released reading", `[{"kind":"rate","seconds":3600}]`, []ask{
			{from: "10:00:00", to: "11:00:00", want: times("10:00:00")},
			{from: "10:00:00.000000001", to: "11:00:00"},
			{from: "10:10:00", to: "11:00:00"},
			{from: "10:50:00", to: "11:00:00"},
			{from: "10:55:00", to: "12:00:00", want: times("11:00:00")}, // the boundary reading opens its hour
			{from: "11:00:00.000000001", to: "12:00:00"},
			{from: "11:30:00", to: "14:00:00", want: times("13:15:00")},
			{from: "13:15:00.000000001", to: "14:00:00"},
		}},
		{"to inside a bucket", `[{"kind":"rate","seconds":3600}]`, []ask{
			{from: "09:00:00", to: "10:00:00"}, // to is exclusive
			{from: "09:00:00", to: "10:00:00.000000001", want: times("10:00:00")},
			{from: "13:00:00", to: "13:10:00"},
			{from: "13:00:00", to: "13:30:00", want: times("13:15:00")},
			{from: "13:20:00", to: "14:00:00"},
		}},
		{"paging by next", `[{"kind":"rate","seconds":3600}]`, []ask{
			{from: "09:00:00", to: "16:00:00", limit: 2, want: times("10:00:00", "11:00:00"), next: "13:15:00"},
			{from: "13:15:00", to: "16:00:00", limit: 2, want: times("13:15:00", "14:59:59.999999999"), next: "15:00:00"},
			{from: "15:00:00", to: "16:00:00", limit: 2, want: times("15:00:00")},
		}},
		{"a period that divides no day", `[{"kind":"rate","seconds":25200}]`, []ask{
			// 7 h buckets from the epoch: …, 07:00, 14:00, … (time.Truncate would say 05:00, 12:00)
			{from: "09:00:00", to: "16:00:00", want: times("10:00:00", "14:59:59.999999999")},
			{from: "10:00:00.000000001", to: "16:00:00", want: times("14:59:59.999999999")},
			{from: "15:00:00", to: "16:00:00"},
		}},
		{"withheld readings take their bucket", `[{"kind":"range","field":"temperature","min":21},{"kind":"rate","seconds":3600}]`, []ask{
			// 10:00 (20) is out of range: the hour is its, and 10:10 (21)
			// is not the hour's first (live, it is not released either)
			{from: "09:00:00", to: "16:00:00", want: times("11:00:00", "13:15:00", "14:59:59.999999999", "15:00:00")},
			{from: "10:05:00", to: "11:00:00"},
			{from: "10:10:00.000000001", to: "11:00:00"},
		}},
		{"no rate", `[]`, []ask{
			{from: "10:05:00", to: "11:00:00", want: times("10:10:00", "10:20:00", "10:30:00", "10:40:00", "10:50:00")},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := rateHistory(t, archive, c.constraints)
			for _, a := range c.asks {
				limit := a.limit
				if limit == 0 {
					limit = DefaultHistoryLimit
				}
				got, next := walkTimes(t, h, at(a.from), at(a.to), limit)
				var wantNext time.Time
				if a.next != "" {
					wantNext = at(a.next)
				}
				if !slices.EqualFunc(got, a.want, time.Time.Equal) || !next.Equal(wantNext) {
					t.Errorf("from %s to %s limit %d: got %v next %v, want %v next %v", a.from, a.to, a.limit, got, next, a.want, wantNext)
				}
			}
		})
	}
}

// TestHistoryRateReleasesOnlyFirstOfBuckets: over random archives, rates
// and queries (pages followed by next), every answer holds exactly the
// first readings of the buckets in its range: no choice of from, to or
// limit gets anything else.
func TestHistoryRateReleasesOnlyFirstOfBuckets(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	base := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	for i := range 200 {
		var archive archived
		tm := base.Add(time.Duration(rng.Int64N(int64(time.Hour))))
		for range 1 + rng.IntN(60) {
			archive = append(archive, struct {
				t    time.Time
				data string
			}{tm, `{"temperature":21}`})
			tm = tm.Add(time.Duration(rng.Int64N(int64(20 * time.Minute)))) // equal times too
		}
		period := []time.Duration{time.Second, 7 * time.Second, time.Minute, 13 * time.Minute, time.Hour, 7 * time.Hour}[rng.IntN(6)]
		h := rateHistory(t, archive, fmt.Sprintf(`[{"kind":"rate","seconds":%g}]`, period.Seconds()))
		first := map[time.Time]time.Time{} // bucket start → its first reading
		for _, r := range archive {
			start := time.Unix(0, r.t.UnixNano()/int64(period)*int64(period)).UTC()
			if _, ok := first[start]; !ok {
				first[start] = r.t
			}
		}
		for range 20 {
			from := base.Add(time.Duration(rng.Int64N(int64(12 * time.Hour))))
			to := from.Add(1 + time.Duration(rng.Int64N(int64(12*time.Hour))))
			var want []time.Time
			for _, f := range first {
				if !f.Before(from) && f.Before(to) {
					want = append(want, f)
				}
			}
			slices.SortFunc(want, time.Time.Compare)
			limit := 1 + rng.IntN(4)
			var got []time.Time
			for f := from; ; {
				page, next := walkTimes(t, h, f, to, limit)
				got = append(got, page...)
				if next.IsZero() {
					break
				}
				f = next
			}
			if !slices.EqualFunc(got, want, time.Time.Equal) {
				t.Fatalf("case %d, rate %s, from %s to %s limit %d: got %v, want %v", i, period, from, to, limit, got, want)
			}
		}
	}
}

// TestHistoryRateBucketBeforeFrom: the bucket of the walk's first reading
// may have begun before from: the archive is asked whether the stream took
// a reading in it before from, and the reading is released only if not.
// Later readings are judged by the walk's own.
func TestHistoryRateBucketBeforeFrom(t *testing.T) {
	at := func(s string) time.Time { t, _ := time.Parse(time.RFC3339Nano, "2026-11-26T"+s+"Z"); return t }
	for _, c := range []struct {
		name    string
		before  string // the reading earlier finds before from, if any ("!": the archive fails)
		seen    string // a reading the walk saw before t, if any
		t       string
		period  time.Duration
		want    bool
		asked   string // the bucket start earlier is asked about ("": not asked)
		wantErr bool
	}{
		{"nothing before from", "", "", "10:40:00", time.Hour, true, "10:00:00", false},
		{"a reading before from", "10:05:00", "", "10:40:00", time.Hour, false, "10:00:00", false},
		{"the next bucket", "10:05:00", "", "11:00:00", time.Hour, true, "", false},
		{"from at a boundary", "10:05:00", "", "10:30:00", 30 * time.Minute, true, "", false},
		{"no rate", "10:05:00", "", "10:40:00", 0, true, "", false},
		{"a reading of the walk's in the bucket", "", "10:35:00", "10:40:00", time.Hour, false, "", false},
		{"a reading of the walk's in the bucket before", "", "10:35:00", "11:05:00", time.Hour, true, "", false},
		{"the archive fails", "!", "", "10:40:00", time.Hour, false, "10:00:00", true},
	} {
		r := historyRate{from: at("10:30:00")}
		asked := ""
		earlier := func(start time.Time) (bool, error) {
			asked = start.Format("15:04:05")
			if c.before == "!" {
				return false, errors.New("archive down")
			}
			return c.before != "", nil
		}
		if c.seen != "" {
			if _, err := r.release(at(c.seen), 0, earlier); err != nil {
				t.Fatal(err)
			}
		}
		got, err := r.release(at(c.t), c.period, earlier)
		if (err != nil) != c.wantErr || err == nil && got != c.want || asked != c.asked {
			t.Errorf("%s: release = %v, %v (asked about %q); want %v (asked about %q)", c.name, got, err, asked, c.want, c.asked)
		}
	}
}

// inclusive is an archive that also streams the readings at "to".
type inclusive struct{ archived }

func (a inclusive) History(ctx context.Context, thing, stream string, from, to time.Time, fn func(time.Time, []byte) bool) error {
	return a.archived.History(ctx, thing, stream, from, to.Add(time.Nanosecond), fn)
}

// TestHistoryRateSearchStopsAtFrom: the search of from's bucket before
// from takes nothing at from, even from a source that streams its end too:
// the reading at from is the walk's, released once.
func TestHistoryRateSearchStopsAtFrom(t *testing.T) {
	at := func(s string) time.Time { t, _ := time.Parse(time.RFC3339Nano, "2026-11-26T"+s+"Z"); return t }
	h := rateHistory(t, inclusive{archived{{at("10:30:00"), `{"temperature":21}`}, {at("10:40:00"), `{"temperature":22}`}}},
		`[{"kind":"rate","seconds":3600}]`)
	if got, _ := walkTimes(t, h, at("10:30:00"), at("11:00:00"), DefaultHistoryLimit); !slices.EqualFunc(got, []time.Time{at("10:30:00")}, time.Time.Equal) {
		t.Fatalf("got %v, want 10:30 once", got)
	}
}

// TestHistoryDecidedAsOfEachReading: a history answer releases each
// reading as a live delivery of it was decided, at the reading's own time
// under the policies in force now, and only to a requester who may ask
// now. A policy allowing exact values by day gives the night's readings as
// the night's policy does, rounded; a co-owner for one evening gets that
// evening's readings, not the day's before it, and nothing once the
// evening is over. The decisions change at hour and window boundaries in
// the middle of one answer.
func TestHistoryDecidedAsOfEachReading(t *testing.T) {
	at := func(s string) time.Time { t, _ := time.Parse(time.RFC3339, "2026-11-26T"+s+"Z"); return t }
	archive := archived{
		{at("03:00:00"), `{"temperature":21.46}`},
		{at("07:59:59"), `{"temperature":21.46}`},
		{at("08:00:00"), `{"temperature":21.46}`},
		{at("16:59:59"), `{"temperature":21.46}`},
		{at("17:00:00"), `{"temperature":21.46}`},
		{at("17:59:59"), `{"temperature":21.46}`},
		{at("18:00:00"), `{"temperature":21.46}`},
		{at("20:00:00"), `{"temperature":21.46}`},
		{at("22:00:01"), `{"temperature":21.46}`},
	}
	clock := &settableClock{}
	e := historyEngine(t, policies.Options{Secret: []byte("test"), Clock: clock}, []string{"an", "doctor", "bob"}, policies.Thing{ID: "thermo-1", Owner: "an", Kind: "sensor", Streams: []string{"temperature"}},
		`{"id":"doctor-day","priority":10,"effect":"allow","subjects":["user:doctor"],"resources":["things/thermo-1/data/temperature"],
		  "actions":["history"],"when":{"attr":"env.hour","op":"between","value":[8,16]}}`,
		`{"id":"doctor-night","priority":20,"effect":"allow","subjects":["user:doctor"],"resources":["things/thermo-1/data/temperature"],
		  "actions":["history"],"constraints":[{"kind":"accuracy","field":"temperature","step":1}]}`)
	if err := e.PutRelationship(policies.Relationship{Thing: "thermo-1", User: "bob", Relation: "co_owner", Status: "active",
		ValidFrom: at("18:00:00"), ValidUntil: at("22:00:00")}); err != nil {
		t.Fatal(err)
	}
	h := NewHistory(HistoryConfig{Engine: e, Source: archive, Clock: clock})
	res, _ := policies.ParseTopic("things/thermo-1/data/temperature")
	walk := func(who string) ([]string, error) {
		q := query{principal: policies.UserPrincipal(who), resource: "things/thermo-1/data/temperature", res: res,
			from: at("00:00:00"), to: at("23:59:59"), limit: 100}
		var got []string
		_, err := h.walk(context.Background(), q, func(t time.Time, out []byte, _ *policies.Decision) {
			got = append(got, t.Format("15:04:05")+" "+string(out))
		})
		return got, err
	}
	exact, rounded := `{"temperature":21.46}`, `{"temperature":21}`
	for _, tc := range []struct {
		who, now string
		want     []string // nil: refused
	}{
		{"doctor", "09:00:00", []string{"03:00:00 " + rounded, "07:59:59 " + rounded, "08:00:00 " + exact, "16:59:59 " + exact,
			"17:00:00 " + rounded, "17:59:59 " + rounded, "18:00:00 " + rounded, "20:00:00 " + rounded, "22:00:01 " + rounded}},
		{"doctor", "23:00:00", []string{"03:00:00 " + rounded, "07:59:59 " + rounded, "08:00:00 " + exact, "16:59:59 " + exact,
			"17:00:00 " + rounded, "17:59:59 " + rounded, "18:00:00 " + rounded, "20:00:00 " + rounded, "22:00:01 " + rounded}},
		{"bob", "21:00:00", []string{"18:00:00 " + exact, "20:00:00 " + exact}},
		{"bob", "22:00:01", nil},
		{"an", "09:00:00", []string{"03:00:00 " + exact, "07:59:59 " + exact, "08:00:00 " + exact, "16:59:59 " + exact,
			"17:00:00 " + exact, "17:59:59 " + exact, "18:00:00 " + exact, "20:00:00 " + exact, "22:00:01 " + exact}},
	} {
		clock.Set(at(tc.now))
		got, err := walk(tc.who)
		if tc.want == nil {
			if !errors.Is(err, errHistoryNotShared) {
				t.Errorf("%s at %s: got %q, %v; want refused", tc.who, tc.now, got, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s at %s: %v", tc.who, tc.now, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s at %s:\n got %q\nwant %q", tc.who, tc.now, got, tc.want)
		}
	}
}

// midAnswer is an archive that calls change after its first reading.
type midAnswer struct {
	archived
	change func()
}

func (a midAnswer) History(ctx context.Context, thing, stream string, from, to time.Time, fn func(time.Time, []byte) bool) error {
	n := 0
	return a.archived.History(ctx, thing, stream, from, to, func(t time.Time, r []byte) bool {
		if n++; n == 2 {
			a.change()
		}
		return fn(t, r)
	})
}

// TestHistoryViewChangeInTheMiddle: an owner's change of a view applies
// to the readings an answer has not reached yet (the decision a walk
// holds from one reading to the next is asked again).
func TestHistoryViewChangeInTheMiddle(t *testing.T) {
	at := func(s string) time.Time { t, _ := time.Parse(time.RFC3339, "2026-11-26T"+s+"Z"); return t }
	var h *History
	archive := midAnswer{archived: archived{{at("01:00:00"), `{"temperature":21.46}`}, {at("02:00:00"), `{"temperature":21.46}`}}}
	h = rateHistory(t, &archive, `[]`)
	archive.change = func() {
		p, err := policies.ParsePolicy([]byte(`{"id":"doctor-coarse","priority":-1,"effect":"allow","subjects":["user:doctor"],
			"resources":["things/thermo-1/data/temperature"],"actions":["history"],"constraints":[{"kind":"accuracy","field":"temperature","step":1}]}`))
		if err != nil {
			t.Fatal(err)
		}
		if err := h.engine.PutPolicy("an", p); err != nil {
			t.Fatal(err)
		}
	}
	res, _ := policies.ParseTopic("things/thermo-1/data/temperature")
	q := query{principal: policies.UserPrincipal("doctor"), resource: "things/thermo-1/data/temperature", res: res,
		from: at("00:00:00"), to: at("03:00:00"), limit: 10}
	var got []string
	if _, err := h.walk(context.Background(), q, func(_ time.Time, out []byte, _ *policies.Decision) { got = append(got, string(out)) }); err != nil {
		t.Fatal(err)
	}
	if want := []string{`{"temperature":21.46}`, `{"temperature":21}`}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// boundedArchive fails, as InfluxDB does, a query reaching past the times
// it can hold.
type boundedArchive struct{ archived }

func (a boundedArchive) History(ctx context.Context, thing, stream string, from, to time.Time, fn func(time.Time, []byte) bool) error {
	if from.Before(historyEarliest) || to.After(historyLatest) {
		return fmt.Errorf("cannot query an empty range %s..%s", from, to)
	}
	return a.archived.History(ctx, thing, stream, from, to, fn)
}

// TestHistoryWalkStaysInTheArchiveRange: a request within the archive's
// range makes no query beyond it, near its ends either: the rate's search
// of the bucket holding from, and the live values' lookback and load
// ahead, are cut to the range.
func TestHistoryWalkStaysInTheArchiveRange(t *testing.T) {
	first := historyEarliest.Add(6 * time.Hour)
	last := historyLatest.Add(-10 * time.Minute)
	for _, c := range []struct {
		name     string
		policy   string
		from, to time.Time
		readings archived
		want     int
	}{
		{"a daily rate at the start", `{"id":"p","priority":0,"effect":"allow","subjects":["user:doctor"],
			"resources":["things/thermo-1/data/temperature"],"actions":["history"],"constraints":[{"kind":"rate","seconds":86400}]}`,
			first, first.Add(time.Hour), archived{{first.Add(time.Minute), `{"temperature":20}`}}, 1},
		{"a data condition at the end", `{"id":"p","priority":0,"effect":"allow","subjects":["user:doctor"],
			"resources":["things/thermo-1/data/temperature"],"actions":["history"],"when":{"attr":"data.thermo-1.temperature.temperature","op":"gt","value":10}}`,
			last.Add(-time.Hour), historyLatest, archived{{last, `{"temperature":20}`}}, 1},
		{"a data condition at the start", `{"id":"p","priority":0,"effect":"allow","subjects":["user:doctor"],
			"resources":["things/thermo-1/data/temperature"],"actions":["history"],"when":{"attr":"data.thermo-1.temperature.temperature","op":"gt","value":10}}`,
			historyEarliest, first, archived{{historyEarliest.Add(time.Minute), `{"temperature":20}`}}, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			live := NewLiveValues() // the requester may ask now
			live.Observe("things/thermo-1/data/temperature", []byte(`{"temperature":20}`))
			e := policies.NewEngine(policies.Options{Secret: []byte("test"), Context: live})
			for _, u := range []string{"an", "doctor"} {
				if err := e.PutUser(policies.User{Name: u}); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.PutThing(policies.Thing{ID: "thermo-1", Owner: "an", Kind: "sensor", Streams: []string{"temperature"}}); err != nil {
				t.Fatal(err)
			}
			p, err := policies.ParsePolicy([]byte(c.policy))
			if err != nil {
				t.Fatal(err)
			}
			if err := e.PutPolicy("an", p); err != nil {
				t.Fatal(err)
			}
			h := NewHistory(HistoryConfig{Engine: e, Source: boundedArchive{c.readings}})
			res, _ := policies.ParseTopic("things/thermo-1/data/temperature")
			q := query{principal: policies.UserPrincipal("doctor"), resource: "things/thermo-1/data/temperature", res: res,
				from: c.from, to: c.to, limit: 10}
			n := 0
			if _, err := h.walk(context.Background(), q, func(time.Time, []byte, *policies.Decision) { n++ }); err != nil {
				t.Fatal(err)
			}
			if n != c.want {
				t.Fatalf("released %d readings, want %d", n, c.want)
			}
		})
	}
}

// TestHistoryAuditPerDecision: an answer's readings are told to the audit
// trail per decision that released them (exact by day, rounded by night:
// two records), when the answer ends; readings of a page never sent are
// not released, and a refusal in the middle of an answer is told as the
// decision that refused.
func TestHistoryAuditPerDecision(t *testing.T) {
	at := func(s string) time.Time { t, _ := time.Parse(time.RFC3339, "2026-11-26T"+s+"Z"); return t }
	type call struct {
		effect, reason string
		n              int64
	}
	for _, c := range []struct {
		name    string
		archive func(h **History) HistorySource
		want    []call
	}{
		{"day and night", func(**History) HistorySource {
			return archived{{at("03:00:00"), `{"temperature":21.46}`}, {at("08:00:00"), `{"temperature":21.46}`},
				{at("16:59:59"), `{"temperature":21.46}`}, {at("17:00:00"), `{"temperature":21.46}`}, {at("22:00:00"), `{"temperature":21.46}`}}
		}, []call{{"constrained", "policy:doctor-night", 3}, {"allow", "policy:doctor-day", 2}}},
		{"revoked in the middle", func(h **History) HistorySource {
			return midAnswer{archived{{at("03:00:00"), `{"temperature":21.46}`}, {at("04:00:00"), `{"temperature":21.46}`}}, func() {
				p, err := policies.ParsePolicy([]byte(`{"id":"doctor-revoked","priority":-1,"effect":"deny","subjects":["user:doctor"],
					"resources":["things/thermo-1/data/temperature"],"actions":["history"]}`))
				if err != nil {
					t.Fatal(err)
				}
				if err := (*h).engine.PutPolicy("an", p); err != nil {
					t.Fatal(err)
				}
			}}
		}, []call{{"deny", "policy:doctor-revoked", 1}}}, // the first reading's page was never sent
	} {
		t.Run(c.name, func(t *testing.T) {
			clock := &settableClock{}
			clock.Set(at("23:00:00"))
			e := historyEngine(t, policies.Options{Secret: []byte("test"), Clock: clock}, []string{"an", "doctor"}, policies.Thing{ID: "thermo-1", Owner: "an", Kind: "sensor", Streams: []string{"temperature"}},
				`{"id":"doctor-day","priority":10,"effect":"allow","subjects":["user:doctor"],"resources":["things/thermo-1/data/temperature"],
				  "actions":["history"],"when":{"attr":"env.hour","op":"between","value":[8,16]}}`,
				`{"id":"doctor-night","priority":20,"effect":"allow","subjects":["user:doctor"],"resources":["things/thermo-1/data/temperature"],
				  "actions":["history"],"constraints":[{"kind":"accuracy","field":"temperature","step":1}]}`)
			var got []call
			var h *History
			h = NewHistory(HistoryConfig{Engine: e, Source: c.archive(&h), Clock: clock,
				Audit: func(p policies.Principal, act policies.Action, purpose string, d *policies.Decision, n int64) {
					if p != policies.UserPrincipal("doctor") || act != policies.ActHistory || purpose != "care" {
						t.Errorf("told %v %s %q", p, act, purpose)
					}
					effect := "deny"
					if d.Allowed() {
						effect = map[bool]string{false: "allow", true: "constrained"}[d.View != nil]
					}
					got = append(got, call{effect, d.Reason(), n})
				}})
			res, _ := policies.ParseTopic("things/thermo-1/data/temperature")
			h.answer(query{cl: &mqtt.Client{ID: "doctor-cli"}, principal: policies.UserPrincipal("doctor"), purpose: "care", topic: "$history/things/thermo-1/data/temperature",
				resource: "things/thermo-1/data/temperature", res: res, from: at("00:00:00"), to: at("23:00:00"), limit: 100})
			if !slices.Equal(got, c.want) {
				t.Fatalf("audit %+v, want %+v", got, c.want)
			}
		})
	}
}

// TestHistoryRateFirstOfBucketAsLive: live, a rate releases a reading
// only if it is the stream's first of its period, whether or not the one
// before went to the subscriber; history does the same: a reading not
// shared at its time takes its bucket too. Allowed from 11:00 at one
// reading per two hours (buckets 10:00–12:00, …): 10:10 was not shared
// and 11:10 not first, so nothing of that bucket is released.
func TestHistoryRateFirstOfBucketAsLive(t *testing.T) {
	at := func(s string) time.Time { t, _ := time.Parse(time.RFC3339, "2026-11-26T"+s+"Z"); return t }
	clock := &settableClock{}
	clock.Set(at("13:00:00"))
	e := historyEngine(t, policies.Options{Secret: []byte("test"), Clock: clock}, []string{"an", "doctor"}, policies.Thing{ID: "thermo-1", Owner: "an", Kind: "sensor", Streams: []string{"temperature"}},
		`{"id":"doctor-rate","priority":0,"effect":"allow","subjects":["user:doctor"],
		"resources":["things/thermo-1/data/temperature"],"actions":["read","history"],
		"when":{"attr":"env.hour","op":"ge","value":11},"constraints":[{"kind":"rate","seconds":7200}]}`)
	if firstOfPeriod(at("11:10:00").UnixNano(), at("10:10:00").UnixNano(), 2*time.Hour) {
		t.Fatal("live would release 11:10")
	}
	archive := archived{{at("10:10:00"), `{"temperature":20}`}, {at("11:10:00"), `{"temperature":21}`}, {at("12:10:00"), `{"temperature":22}`}}
	h := NewHistory(HistoryConfig{Engine: e, Source: archive, Clock: clock})
	res, _ := policies.ParseTopic("things/thermo-1/data/temperature")
	for _, from := range []string{"10:00:00", "10:30:00", "11:00:00"} {
		q := query{principal: policies.UserPrincipal("doctor"), resource: "things/thermo-1/data/temperature", res: res,
			from: at(from), to: at("13:00:00"), limit: 100}
		var got []time.Time
		if _, err := h.walk(context.Background(), q, func(ts time.Time, _ []byte, _ *policies.Decision) { got = append(got, ts) }); err != nil {
			t.Fatal(err)
		}
		if want := []time.Time{at("12:10:00")}; !slices.EqualFunc(got, want, time.Time.Equal) {
			t.Errorf("from %s: released %v, want %v (as live)", from, got, want)
		}
	}
}

// TestFormerCoOwnersHistoryIsAudited: readings of an evening bob was
// co-owner are released to him the next morning under the rule co_owner
// (decided as of their time); the trail leaves out owners' own access,
// but bob has no say when he asks: his reads are recorded, as was_co_owner.
func TestFormerCoOwnersHistoryIsAudited(t *testing.T) {
	at := func(s string) time.Time { t, _ := time.Parse(time.RFC3339, "2026-11-26T"+s+"Z"); return t }
	archive := archived{{at("19:00:00"), `{"temperature":21.4}`}, {at("20:00:00"), `{"temperature":21.5}`}, {at("23:00:00"), `{"temperature":21.6}`}}
	clock := &settableClock{}
	e := historyEngine(t, policies.Options{Secret: []byte("test"), Clock: clock}, []string{"an", "bob"}, policies.Thing{ID: "thermo-1", Owner: "an", Kind: "sensor", Streams: []string{"temperature"}},
		`{"id":"bob-history","priority":10,"effect":"allow","subjects":["user:bob"],
		"resources":["things/thermo-1/data/temperature"],"actions":["history"]}`)
	if err := e.PutRelationship(policies.Relationship{Thing: "thermo-1", User: "bob", Relation: "co_owner", Status: "active",
		ValidFrom: at("18:00:00"), ValidUntil: at("22:00:00")}); err != nil {
		t.Fatal(err)
	}
	clock.Set(at("23:30:00"))
	trail := NewAudit(AuditConfig{Clock: clock})
	h := NewHistory(HistoryConfig{Engine: e, Source: archive, Clock: clock, Audit: trail.Record})
	res, _ := policies.ParseTopic("things/thermo-1/data/temperature")
	q := query{principal: policies.UserPrincipal("bob"), resource: "things/thermo-1/data/temperature", res: res,
		from: at("00:00:00"), to: at("23:59:59"), limit: 100}
	var released int64
	if _, err := h.walk(context.Background(), q, func(_ time.Time, _ []byte, d *policies.Decision) {
		released++
		h.record(&q, d, 1) // as answer does when the page is sent
	}); err != nil {
		t.Fatal(err)
	}
	var recorded int64
	for i := range trail.shards {
		s := &trail.shards[i]
		s.mu.Lock()
		s.drain()
		for k, n := range s.m {
			if k.who == "bob" {
				recorded += n
			}
		}
		s.mu.Unlock()
	}
	if released != 3 || recorded != released {
		t.Errorf("bob (no co-owner when he asked) was sent %d readings; the trail records %d", released, recorded)
	}
}

// historyEngine is an engine with opts over users, thing and an's
// policies (JSON documents).
func historyEngine(t *testing.T, opts policies.Options, users []string, thing policies.Thing, docs ...string) *policies.Engine {
	t.Helper()
	e := policies.NewEngine(opts)
	for _, u := range users {
		if err := e.PutUser(policies.User{Name: u}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.PutThing(thing); err != nil {
		t.Fatal(err)
	}
	for _, doc := range docs {
		p, err := policies.ParsePolicy([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.PutPolicy("an", p); err != nil {
			t.Fatal(err)
		}
	}
	return e
}
