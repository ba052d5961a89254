package broker_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/broker"
	"github.com/veil-iot/veil/policies"
)

// TestRateLimitedSubscriber: under a rate constraint a subscriber gets the
// first reading of each period; the others are withheld from it entirely,
// while the owner gets every one.
func TestRateLimitedSubscriber(t *testing.T) {
	p, err := policies.ParsePolicy([]byte(`{"id":"doctor-hr-hourly","priority":1,"effect":"allow","subjects":["user:doctor"],
		"resources":["things/watch-1/data/heart_rate"],"actions":["read"],"constraints":[{"kind":"rate","seconds":3600}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := veil.Engine.PutPolicy("an", p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { veil.Engine.DeletePolicy("an", p.ID); clock.Set(evening) })
	// A rate releases the first reading of each hour the stream took: a
	// day of its own, so that no other test's reading came first.
	day := evening.Add(7 * 24 * time.Hour)
	clock.Set(day)

	an := connect(t, "an", "an-pass", connOpts{})
	doc := connect(t, "doctor", "doctor-pass", connOpts{})
	an.mustSubscribe("", "things/watch-1/data/heart_rate")
	doc.mustSubscribe("", "things/watch-1/data/heart_rate")
	watch := connect(t, "watch-1", "watch-1-secret", connOpts{clientID: "watch-1"})
	for i, bpm := range []string{"61", "62", "63"} {
		watch.publish("things/watch-1/data/heart_rate", `{"bpm":`+bpm+`}`, false)
		if m := an.next(); m.payload != `{"bpm":`+bpm+`}` {
			t.Fatalf("owner message %d: %s", i, m.payload)
		}
	}
	if m := doc.next(); m.payload != `{"bpm":61}` {
		t.Fatalf("doctor got %s first", m.payload)
	}
	doc.nothing(quiet)
	clock.Set(day.Add(time.Hour))
	watch.publish("things/watch-1/data/heart_rate", `{"bpm":70}`, false)
	if m := doc.next(); m.payload != `{"bpm":70}` {
		t.Fatalf("doctor after the period got %s", m.payload)
	}
}

// TestRateHoldsAcrossRestart: under "one reading a year" the nurse gets a
// meter's first reading; after a restart the meter's next reading, in the
// same year, is withheld from her: the broker finds the reading before it
// in the archive. (The first reading of a stream since start passed as the
// first of its period.)
func TestRateHoldsAcrossRestart(t *testing.T) {
	cfg := archiveConfig(t, influxd(t).URL, "veil_rate_restart")
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	b := startBroker(t, cfg, log)
	nurseGetsYearly(t, b)
	nurseGetsFirst(t, meterReading(t, b, 100))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.DrainArchive(ctx); err != nil {
		t.Fatal(err)
	}
	b.Close()

	b = startBroker(t, cfg, log)
	defer b.Close()
	nurseGetsNoSecond(t, meterReading(t, b, 200), "after a restart")
}

// TestRateHoldsAcrossRestartWithReadingsSpooled: the same, with the year's
// first reading not taken by InfluxDB yet (its writes fail: it is behind,
// or was away), so it waits in the spool; InfluxDB answers queries all
// along, and found no reading before, though one went out.
func TestRateHoldsAcrossRestartWithReadingsSpooled(t *testing.T) {
	target, err := url.Parse(influxd(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	var writes atomic.Bool // false: InfluxDB refuses writes (behind)
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/write") && !writes.Load() {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	cfg := archiveConfig(t, front.URL, "veil_rate_spooled")
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel)
	b := startBroker(t, cfg, log)
	nurseGetsYearly(t, b)
	nurseGetsFirst(t, meterReading(t, b, 100))
	if st, _ := b.ArchiveStats(); st.SpoolBytes == 0 {
		t.Fatal("the reading is not spooled")
	}
	b.Close()

	b = startBroker(t, cfg, log)
	defer b.Close()
	nurseGetsNoSecond(t, meterReading(t, b, 200), "after a restart, with the year's first reading still spooled,")
	writes.Store(true) // the backlog drains: later first readings find it again
}

// nurseGetsYearly is an's policy: the nurse reads meter-1's power, one
// reading a year.
func nurseGetsYearly(t *testing.T, b *broker.Broker) {
	t.Helper()
	mustCfg(t, b.Addr("mqtt"), "an", "an-pass").mustOK("$config/users/an/policies/nurse-power-yearly",
		`{"id":"nurse-power-yearly","priority":60,"effect":"allow","subjects":["role:nurse"],`+
			`"resources":["things/meter-1/data/power"],"actions":["read"],"constraints":[{"kind":"rate","seconds":31536000}]}`)
}

// meterReading subscribes the nurse and an to meter-1's power, publishes
// the reading {"w":w} and waits for an, the owner, to get it; it returns
// the nurse.
func meterReading(t *testing.T, b *broker.Broker, w int) (nurse *mqttClient) {
	t.Helper()
	addr := b.Addr("mqtt")
	nurse, an := dialAt(t, addr, "nurse", "nurse-pass", "", ""), dialAt(t, addr, "an", "an-pass", "", "")
	nurse.sub("things/meter-1/data/power", "")
	an.sub("things/meter-1/data/power", "")
	meter := dialAt(t, addr, "meter-1", "meter-1-secret", "meter-1", "")
	if code := meter.pub("things/meter-1/data/power", fmt.Sprintf(`{"w":%d}`, w), 1); code != 0 {
		t.Fatalf("PUBACK 0x%02x", code)
	}
	select {
	case m := <-an.msgs:
		if string(m.Payload) != fmt.Sprintf(`{"w":%d}`, w) {
			t.Fatalf("an got %s", m.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an, the owner, did not get the reading")
	}
	return nurse
}

func nurseGetsFirst(t *testing.T, nurse *mqttClient) {
	t.Helper()
	select {
	case m := <-nurse.msgs:
		if string(m.Payload) != `{"w":100}` {
			t.Fatalf("the nurse got %s", m.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the nurse did not get the year's first reading")
	}
}

func nurseGetsNoSecond(t *testing.T, nurse *mqttClient, when string) {
	t.Helper()
	select {
	case m := <-nurse.msgs:
		t.Fatalf("%s the nurse got %s, the year's second reading", when, m.Payload)
	case <-time.After(time.Second):
	}
}
