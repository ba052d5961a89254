package broker_test

import (
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
)

// TestRateHoldsAcrossRestartWithReadingsSpooled: under "one reading a
// year" the nurse gets a meter's first reading, which InfluxDB has not
// taken yet (its writes fail: it is behind, or was away), so it waits in
// the spool; after a restart the meter's next reading, in the same year,
// must still be withheld from her. InfluxDB answers queries all along: the
// archive found no reading before, though one went out, still spooled.
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
	mustCfg(t, b.Addr("mqtt"), "an", "an-pass").mustOK("$config/users/an/policies/nurse-power-yearly",
		`{"id":"nurse-power-yearly","priority":60,"effect":"allow","subjects":["role:nurse"],`+
			`"resources":["things/meter-1/data/power"],"actions":["read"],"constraints":[{"kind":"rate","seconds":31536000}]}`)
	reading := func(b *broker.Broker, w int) *mqttClient {
		addr := b.Addr("mqtt")
		nurse, an := dialAt(t, addr, "nurse", "nurse-pass", "", ""), dialAt(t, addr, "an", "an-pass", "", "")
		nurse.sub("things/meter-1/data/power", "")
		an.sub("things/meter-1/data/power", "")
		meter := dialAt(t, addr, "meter-1", "meter-1-secret", "meter-1", "")
		if code := meter.pub("things/meter-1/data/power", fmt.Sprintf(`{"w":%d}`, w), 1); code != 0 {
			t.Fatalf("PUBACK 0x%02x", code)
		}
		select {
		case <-an.msgs:
		case <-time.After(5 * time.Second):
			t.Fatal("an, the owner, did not get the reading")
		}
		return nurse
	}
	nurse := reading(b, 100)
	select {
	case m := <-nurse.msgs:
		if string(m.Payload) != `{"w":100}` {
			t.Fatalf("the nurse got %s", m.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the nurse did not get the year's first reading")
	}
	if st, _ := b.ArchiveStats(); st.SpoolBytes == 0 {
		t.Fatal("the reading is not spooled")
	}
	b.Close()

	b = startBroker(t, cfg, log)
	defer b.Close()
	nurse = reading(b, 200)
	select {
	case m := <-nurse.msgs:
		t.Fatalf("after a restart, with the year's first reading still spooled, the nurse got %s, the year's second", m.Payload)
	case <-time.After(time.Second):
	}
	writes.Store(true) // the backlog drains: later first readings find it again
}
