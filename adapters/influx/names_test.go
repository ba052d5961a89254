package influx_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/influxdb-client-go/v2/api"

	"github.com/veil-iot/veil/adapters/influx"
	"github.com/veil-iot/veil/policies"
)

// TestControlBytesInNames: a name with a control byte is left out (a field)
// or refuses the reading (a stream): influxd takes a leading NUL for a
// space (the field would be stored as another), and echoes a refused name
// in a response header Go's HTTP client refuses, so a batch with one was
// sent again for ever, every owner's readings waiting behind it. Here the
// refusal is a type conflict with an older, untyped key.
func TestControlBytesInNames(t *testing.T) {
	a := open(t, "controls", nil)
	now := time.Now()
	if err := a.AppendLine(fmt.Appendf(nil, "s,thing=mal-1 v\x01=\"text\" %d\n", now.UnixNano())); err != nil {
		t.Fatal(err)
	}
	drained(t, a)
	for _, r := range []influx.Reading{
		{Thing: "mal-1", Owner: "mallory", Stream: "s", Payload: []byte(`{"v\u0001":1,"w":2}`), Received: now.Add(time.Millisecond)},
		{Thing: "w-1", Owner: "an", Stream: "hr", Payload: []byte(`{"\u0000bpm":200,"ok":true}`), Received: now.Add(2 * time.Millisecond)},
		{Thing: "thermo-1", Owner: "an", Stream: "temperature", Payload: []byte(`{"temperature":21}`), Received: now.Add(3 * time.Millisecond)},
	} {
		if err := a.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Append(influx.Reading{Thing: "w-1", Owner: "an", Stream: "h\x01r", Payload: []byte(`{"x":1}`), Received: now}); !errors.Is(err, influx.ErrNotAReading) {
		t.Errorf("a stream with a control byte: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Drain(ctx); err != nil {
		t.Fatalf("the archive stalls behind a refusal naming a control byte: %v (stats %+v)", err, a.Stats())
	}
	var got map[string]any
	if err := a.History(context.Background(), "w-1", "hr", "an", now, now.Add(time.Second), func(r influx.Row) bool { got = r.Fields; return false }); err != nil {
		t.Fatal(err)
	}
	if _, ok := got["bpm"]; ok || got["ok"] != true {
		t.Errorf("a field named \"\\x00bpm\" came back as %v", got)
	}
}

// TestAmbiguousNamesRefused: a reading whose flattened names meet — a
// duplicate key, or a name both a value and an object's — is refused:
// rebuilt for history it could come back otherwise than it was sent, a
// value out from under the object a view drops. (Live, a view withholds a
// duplicate key.)
func TestAmbiguousNamesRefused(t *testing.T) {
	a := open(t, "ambiguous", nil)
	recv := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	view, err := policies.NewView(nil, []policies.Constraint{{Kind: policies.ConstraintFields, Drop: []string{"position"}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		payload string
		refused bool
	}{
		{`{"position":{"lat":48.137154,"lon":11.576124},"position":true,"battery":80}`, true},
		{`{"position":true,"position":{"lat":48.137154}}`, true},
		{`{"a":1,"a":2}`, true},
		{`{"a":1,"a.b":2}`, true},
		{`{"a.b":1,"a":{"b":2}}`, true},
		{`{"a":{"b":{"c":1},"b.c":2}}`, true},
		{`{"a":{"b":1},"ab":2,"a.c":3}`, false},
		{`{"position":{"lat":48.137154,"lon":11.576124},"battery":80}`, false},
	} {
		err := a.Append(influx.Reading{Thing: "tracker-1", Stream: "location", Owner: "an", Received: recv, Payload: []byte(c.payload)})
		if got := errors.Is(err, influx.ErrNotAReading); got != c.refused {
			t.Errorf("%s: %v, want refused %v", c.payload, err, c.refused)
		}
		recv = recv.Add(time.Second)
	}
	drained(t, a)
	if err := a.History(context.Background(), "tracker-1", "location", "an", recv.Add(-time.Hour), recv, func(r influx.Row) bool {
		data, _ := json.Marshal(influx.Unflatten(r.Fields))
		if out, err := view.Apply(data); err == nil && strings.Contains(string(out), "48.137154") {
			t.Errorf("history would release %s past the drop", out)
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
}

// eraseBetween runs its query API, erasing the stream before the second
// query (a retention policy dropping the shard between Latest's two).
type eraseBetween struct {
	api.QueryAPI
	n     int
	erase func()
}

func (e *eraseBetween) Query(ctx context.Context, q string) (*api.QueryTableResult, error) {
	if e.n++; e.n == 2 {
		e.erase()
	}
	return e.QueryAPI.Query(ctx, q)
}

// TestLatestGoneBetweenItsQueries: a reading found by Latest's first
// query and gone at its second is none, not an empty reading at time zero.
func TestLatestGoneBetweenItsQueries(t *testing.T) {
	a := open(t, "latestgone", nil)
	recv := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	if err := a.Append(influx.Reading{Thing: "hub-1", Stream: "ctl", Owner: "an", Received: recv, Payload: []byte(`{"private":true}`)}); err != nil {
		t.Fatal(err)
	}
	drained(t, a)
	influx.WrapQuery(a, func(q api.QueryAPI) api.QueryAPI {
		return &eraseBetween{QueryAPI: q, erase: func() {
			resp, err := http.PostForm(server.URL+"/query", url.Values{"db": {"latestgone"}, "q": {`DELETE FROM "ctl" WHERE "thing" = 'hub-1'`}})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}}
	})
	if r, ok, err := a.Latest(context.Background(), "hub-1", "ctl", "an", recv.Add(time.Hour)); err != nil || ok {
		t.Fatalf("Latest = %+v, %v, %v; want none", r, ok, err)
	}
}

// TestHistoryStoppedByItsContextSaysSo: readings cut short by the
// caller's context end in its error, not in a complete-looking nil.
func TestHistoryStoppedByItsContextSaysSo(t *testing.T) {
	a := open(t, "cutshort", nil)
	recv := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	for i := range 3 {
		if err := a.Append(influx.Reading{Thing: "t-1", Stream: "s", Owner: "an", Received: recv.Add(time.Duration(i) * time.Second), Payload: []byte(`{"x":1}`)}); err != nil {
			t.Fatal(err)
		}
	}
	drained(t, a)
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	err := a.History(ctx, "t-1", "s", "an", recv, recv.Add(time.Minute), func(influx.Row) bool {
		if n++; n == 1 {
			cancel()
		}
		return true
	})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("after %d readings and a cancelled context: %v, want context.Canceled", n, err)
	}
}

// TestAnswerGoRefusesIsARefusal: an answer of InfluxDB's whose header Go
// refuses (it echoed a control byte of what it refused) is a refusal, not
// an outage: the line is dropped, the others go in, the archive goes on.
func TestAnswerGoRefusesIsARefusal(t *testing.T) {
	// A write endpoint that refuses lines holding "bad" with a header
	// Go's client cannot read, and passes the others to influxd.
	upstream, _ := url.Parse(server.URL)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if strings.Contains(r.URL.Path, "write") && bytes.Contains(body, []byte("bad")) {
			conn, buf, _ := w.(http.Hijacker).Hijack()
			_, _ = buf.WriteString("HTTP/1.1 400 Bad Request\r\nX-Influxdb-Error: field \"v\x01\" refused\r\nContent-Length: 0\r\n\r\n")
			_ = buf.Flush()
			_ = conn.Close()
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		httputil.NewSingleHostReverseProxy(upstream).ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	a := open(t, "goreject", func(c *influx.Config) { c.URL = proxy.URL })
	now := time.Now()
	for i, body := range []string{`{"x":1}`, `{"note":"bad"}`, `{"x":3}`} {
		if err := a.Append(influx.Reading{Thing: "t-1", Owner: "an", Stream: "s", Payload: []byte(body), Received: now.Add(time.Duration(i) * time.Millisecond)}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Drain(ctx); err != nil {
		t.Fatalf("the archive stalls behind an answer Go refuses: %v (stats %+v)", err, a.Stats())
	}
	if st := a.Stats(); st.Rejected != 1 || st.Written != 2 {
		t.Errorf("stats %+v: want 2 written, 1 rejected", st)
	}
}

// manyFields is a reading of n number fields "f0"…, then extra.
func manyFields(n int, extra string) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i := range n {
		fmt.Fprintf(&b, `"f%d":%d,`, i, i)
	}
	b.WriteString(extra)
	b.WriteByte('}')
	return b.Bytes()
}

// TestAmbiguousNamesAmongManyFields: past a few fields the names are
// kept in sets, not compared pairwise (a reading of 256 KiB has tens of
// thousands): ambiguity is found there all the same.
func TestAmbiguousNamesAmongManyFields(t *testing.T) {
	for _, c := range []struct {
		extra   string
		refused bool
	}{
		{`"last":1`, false},
		{`"f3":1`, true},
		{`"f3.x":1`, true},
		{`"g":{"h":1},"g.h":2`, true},
		{`"g.h":1,"g":2`, true},
		{`"g":{"h":1},"gh":2`, false},
	} {
		_, err := influx.AppendLine(nil, influx.Reading{Thing: "t-1", Stream: "s", Owner: "an", Payload: manyFields(40, c.extra), Received: time.Unix(1, 0)})
		if got := errors.Is(err, influx.ErrNotAReading); got != c.refused {
			t.Errorf("40 fields and %s: %v, want refused %v", c.extra, err, c.refused)
		}
	}
}

// BenchmarkLineManyFields encodes a reading of 10,000 fields (about
// 100 KB): linear in its fields, as a thing may send such a reading.
func BenchmarkLineManyFields(b *testing.B) {
	r := influx.Reading{Thing: "t-1", Stream: "s", Owner: "an", Payload: manyFields(10_000, `"last":1`), Received: time.Unix(1, 0)}
	var dst []byte
	for b.Loop() {
		var err error
		if dst, err = influx.AppendLine(dst[:0], r); err != nil {
			b.Fatal(err)
		}
	}
}
