package hooks

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/veil-iot/veil/policies"
)

// A rate constraint holds for the requester: a second connection, or the
// same client reconnected (a new session), gets nothing more within the
// period; the next period starts when the last one ends.
func TestRateHoldsForTheRequester(t *testing.T) {
	clock := &settableClock{}
	clock.Set(time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC))
	f := hourlyDoctor(t, clock)
	h := f.enforcer
	phone := f.client("doctor-phone", policies.UserPrincipal("doctor"))
	laptop := f.client("doctor-laptop", policies.UserPrincipal("doctor"))
	steps := []struct {
		step string
		to   func() bool
		want bool
	}{
		{"the phone's first", func() bool { return h.OnACLCheck(phone, memoTopic, false) }, true},
		{"the laptop, a minute later", func() bool { clock.Add(time.Minute); return h.OnACLCheck(laptop, memoTopic, false) }, false},
		{"the phone reconnected", func() bool {
			f.sessions.put(phone, newSession(policies.UserPrincipal("doctor"), false, ""))
			return h.OnACLCheck(phone, memoTopic, false)
		}, false},
		{"the laptop, an hour after the first", func() bool { clock.Add(59 * time.Minute); return h.OnACLCheck(laptop, memoTopic, false) }, true},
		{"the phone then", func() bool { return h.OnACLCheck(phone, memoTopic, false) }, false},
	}
	for _, s := range steps {
		if got := s.to(); got != s.want {
			t.Fatalf("%s: delivered = %v, want %v", s.step, got, s.want)
		}
	}
}

// The book forgets periods that ended, so it does not grow with every
// stream ever limited.
func TestRateBookForgetsEndedPeriods(t *testing.T) {
	var b rateBook
	now := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	doctor := policies.UserPrincipal("doctor")
	for i := range 1000 {
		if !b.allow(doctor, fmt.Sprintf("things/s-%d/data/t", i), time.Second, now) {
			t.Fatalf("stream %d held back on its first delivery", i)
		}
		now = now.Add(10 * time.Millisecond)
	}
	if n := len(b.until); n > 300 {
		t.Fatalf("%d streams remembered, of which at most 100 have a running period", n)
	}
	if b.allow(doctor, "things/s-999/data/t", time.Second, now) {
		t.Fatal("a stream delivered 10 ms ago passed again")
	}
}

// Under a rate-only view a delivery is written as published, properties
// and all, but only if it is a reading (a JSON object), as under any
// constraint: also when the fan-out could not judge its payload (the
// message had left the table of fan-outs), or judged another one.
func TestRateOnlyViewWritesReadingsOnly(t *testing.T) {
	clock := &settableClock{}
	clock.Set(time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC))
	f := hourlyDoctor(t, clock)
	h := f.enforcer
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	for _, c := range []struct {
		payload string
		written bool
	}{
		{`{"temperature":21.37}`, true},
		{`21.37`, false},
		{`{"temperature":21.37,"temperature":99}`, false},
	} {
		pk := queuedPk(memoTopic, 0, false)
		pk.FixedHeader.Qos, pk.Payload = 0, []byte(c.payload)
		pk.Properties.User = []packets.UserProperty{{Key: "unit", Val: "C"}}
		out := h.OnPacketEncode(doctor, pk)
		written := out.FixedHeader.Type == packets.Publish
		if written != c.written {
			t.Errorf("%s: written %v, want %v", c.payload, written, c.written)
		}
		if written && (string(out.Payload) != c.payload || len(out.Properties.User) != 1) {
			t.Errorf("%s: written as %q with user properties %v, want as published", c.payload, out.Payload, out.Properties.User)
		}
	}
}

// A rate releases the first reading of each period the stream took (the
// periods aligned to the Unix epoch), live and through $history alike, so
// that a requester allowed both gets no more than one reading a period:
// under one an hour, a doctor who subscribes at half past gets nothing
// live until the next hour, as history gives him the hour's first reading
// (the live rate once counted from his last delivery: a second reading).
func TestRateReleasesTheSameReadingLiveAndInHistory(t *testing.T) {
	clock := &settableClock{}
	at := func(hh, mm int) time.Time { return time.Date(2026, 11, 26, hh, mm, 0, 0, time.UTC) }
	f := newDeliveryFixture(t, clock)
	hourly := doctorTemperature
	hourly.Actions = []policies.Action{policies.ActRead, policies.ActHistory}
	hourly.Constraints = []policies.Constraint{{Kind: "rate", Seconds: 3600}}
	if err := f.engine.PutPolicy("an", hourly); err != nil {
		t.Fatal(err)
	}
	h := f.enforcer
	sensor := f.client("sensor-1", policies.ThingPrincipal("sensor-1"))
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	var archive archived
	publish := func(when time.Time, payload string) (delivered bool) {
		clock.Set(when)
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: memoTopic, Payload: []byte(payload)}
		if !h.OnACLCheck(sensor, memoTopic, true) {
			t.Fatal("publish refused")
		}
		if _, err := h.OnPublish(sensor, pk); err != nil {
			t.Fatal(err)
		}
		delivered = h.OnACLCheck(doctor, memoTopic, false)
		h.OnPublished(sensor, pk)
		archive = append(archive, struct {
			t    time.Time
			data string
		}{when, payload})
		return delivered
	}
	publish(at(10, 5), `{"temperature":20.1}`) // before the doctor looks: the hour's first
	live := map[string]bool{}
	for _, r := range []struct {
		when    time.Time
		payload string
		want    bool
	}{
		{at(10, 30), `{"temperature":20.2}`, false},
		{at(10, 50), `{"temperature":20.3}`, false},
		{at(11, 2), `{"temperature":20.4}`, true},
		{at(11, 40), `{"temperature":20.5}`, false},
	} {
		if got := publish(r.when, r.payload); got != r.want {
			t.Fatalf("the reading at %s delivered live: %v, want %v", r.when.Format("15:04"), got, r.want)
		}
		if r.want {
			live[r.payload] = true
		}
	}
	hist := NewHistory(HistoryConfig{Engine: f.engine, Source: archive, Clock: clock})
	res, _ := policies.ParseTopic(memoTopic)
	q := query{principal: policies.UserPrincipal("doctor"), resource: memoTopic, res: res, from: at(10, 0), to: at(12, 0), limit: DefaultHistoryLimit}
	held := live // what the doctor holds, live and through history
	if _, err := hist.walk(context.Background(), q, func(_ time.Time, out []byte, _ *policies.Decision) { held[string(out)] = true }); err != nil {
		t.Fatal(err)
	}
	perHour := map[int][]string{}
	for _, r := range archive {
		if held[r.data] {
			perHour[r.t.Hour()] = append(perHour[r.t.Hour()], r.data)
		}
	}
	for _, hour := range []int{10, 11} {
		if len(perHour[hour]) != 1 {
			t.Errorf("the doctor holds %v of %d:00 (live and history), want one reading", perHour[hour], hour)
		}
	}
}

// hourlyStream is a sensor of hourlyDoctor's household publishing on
// memoTopic as mochi does: OnPublish, the retained copy, the fan-out's ACL
// check for the doctor, OnPublished; each packet with its own topic string
// and mochi's Created.
type hourlyStream struct {
	t              *testing.T
	f              *deliveryFixture
	clock          *settableClock
	sensor, doctor *mqtt.Client
}

func newHourlyStream(t *testing.T) *hourlyStream {
	clock := &settableClock{}
	f := hourlyDoctor(t, clock)
	return &hourlyStream{t: t, f: f, clock: clock,
		sensor: f.client("sensor-1", policies.ThingPrincipal("sensor-1")), doctor: f.client("doctor-0", policies.UserPrincipal("doctor"))}
}

func hourAt(hh, mm int) time.Time { return time.Date(2026, 11, 26, hh, mm, 0, 0, time.UTC) }

// publish publishes payload at when, its fan-out left under way unless
// end. It returns the doctor's copy as retain-as-published writes it, and
// whether the fan-out's ACL check let it through.
func (s *hourlyStream) publish(when time.Time, payload string, retain, end bool) (packets.Packet, bool) {
	s.t.Helper()
	s.clock.Set(when)
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: retain}, TopicName: strings.Clone(memoTopic),
		Payload: []byte(payload), Created: when.Unix()}
	if _, err := s.f.enforcer.OnPublish(s.sensor, pk); err != nil {
		s.t.Fatal(err)
	}
	if retain { // mochi retains a copy before the fan-out
		s.f.server.Topics.RetainMessage(pk.Copy(false))
	}
	ok := s.f.enforcer.OnACLCheck(s.doctor, pk.TopicName, false)
	if end {
		s.f.enforcer.OnPublished(s.sensor, pk)
	}
	return pk.Copy(false), ok
}

// sendRetained reports whether the retained message reaches a new
// subscription of the doctor at when: the ACL check, then the encode hook.
func (s *hourlyStream) sendRetained(when time.Time) bool {
	s.clock.Set(when)
	r, ok := s.f.server.Topics.Retained.Get(memoTopic)
	if !ok {
		s.t.Fatal("nothing retained")
	}
	r.FixedHeader.Retain = true
	h := s.f.enforcer
	return h.OnACLCheck(s.doctor, r.TopicName, false) && h.OnPacketEncode(s.doctor, r).FixedHeader.Type == packets.Publish
}

// A retained reading is judged by its own time: under one an hour, the
// retained 09:50 reading (the second of its hour, held back live) is not
// sent to a subscription made at 10:30, whether a later reading took the
// retained one's place as the stream's latest, or is being fanned out as
// the retained one is sent (the ACL check finds that message; the encode
// hook judges the retained bytes).
func TestRetainedReadingJudgedByItsOwnTime(t *testing.T) {
	for _, fannedOut := range []bool{false, true} {
		s := newHourlyStream(t)
		if _, ok := s.publish(hourAt(9, 10), `{"temperature":20.1}`, true, true); !ok {
			t.Fatal("hour 9's first reading held back")
		}
		if _, ok := s.publish(hourAt(9, 50), `{"temperature":20.9}`, true, true); ok {
			t.Fatal("hour 9's second reading delivered live")
		}
		if _, ok := s.publish(hourAt(10, 5), `{"temperature":21.5}`, false, !fannedOut); !ok {
			t.Fatal("hour 10's first reading held back")
		}
		if s.sendRetained(hourAt(10, 30)) {
			t.Errorf("fanned out %v: the retained 09:50 reading, the second of 9:00-10:00, sent under one an hour", fannedOut)
		}
	}
}

// A retained reading that is the first of its period goes out under a
// rate: live with retain-as-published though a later reading came before
// the write loop wrote it (judged when it was fanned out), and on a
// subscription after a restart, when the stream's readings are not known
// yet (the requester's rate book then holds back the next).
func TestRetainedFirstReadingGoesOut(t *testing.T) {
	s := newHourlyStream(t)
	first, ok := s.publish(hourAt(10, 5), `{"temperature":21.5}`, true, true)
	if !ok {
		t.Fatal("hour 10's first reading held back")
	}
	if _, ok := s.publish(hourAt(10, 6), `{"temperature":21.6}`, true, true); ok {
		t.Fatal("hour 10's second reading delivered live")
	}
	if s.f.enforcer.OnPacketEncode(s.doctor, first).FixedHeader.Type != packets.Publish {
		t.Errorf("hour 10's first reading, allowed when fanned out, dropped at encode")
	}

	// A fresh process: the retained reading is all there is.
	s = newHourlyStream(t)
	s.f.server.Topics.RetainMessage(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, TopicName: memoTopic,
		Payload: []byte(`{"temperature":21.5}`), Created: hourAt(10, 5).Unix()})
	if !s.sendRetained(hourAt(10, 30)) {
		t.Error("after a restart the retained reading, the stream's latest, withheld under one an hour")
	}
	if s.sendRetained(hourAt(10, 31)) {
		t.Error("after a restart the retained reading went out twice within the hour")
	}
}

// Sensors repeat values: readings with the same bytes are told apart by
// mochi's creation second, and the stream's past holds retained readings
// only. Under one an hour:
//   - a first reading sent retain-as-published is not dropped at encode
//     because a later one has its bytes;
//   - a retained first reading goes out on a subscription though a later
//     reading, not retained, has its bytes, even in the same second;
//   - a retained second reading of its hour is not sent in the next hour
//     because that hour's first reading has its bytes.
func TestRepeatedValues(t *testing.T) {
	s := newHourlyStream(t)
	first, _ := s.publish(hourAt(10, 5), `{"temperature":21.5}`, true, true)
	if _, ok := s.publish(hourAt(10, 6), `{"temperature":21.5}`, true, true); ok {
		t.Fatal("hour 10's second reading delivered live")
	}
	if s.f.enforcer.OnPacketEncode(s.doctor, first).FixedHeader.Type != packets.Publish {
		t.Error("hour 10's first reading, allowed at the ACL check, dropped at encode: a later reading had the same bytes")
	}

	s = newHourlyStream(t)
	s.publish(hourAt(10, 5), `{"temperature":21.5}`, true, true)   // hour 10's first, retained
	s.publish(hourAt(10, 20), `{"temperature":21.5}`, false, true) // the same value, not retained
	if !s.sendRetained(hourAt(10, 30)) {
		t.Error("the retained 10:05 reading, the first of its hour, withheld on a subscription")
	}

	s = newHourlyStream(t)
	base := hourAt(10, 0)
	s.publish(base.Add(-50*time.Minute), `{"temperature":20.0}`, true, true)
	s.publish(base.Add(200*time.Millisecond), `{"temperature":21.5}`, true, true)  // hour 10's first, retained
	s.publish(base.Add(700*time.Millisecond), `{"temperature":21.5}`, false, true) // the same value, the same second
	if !s.sendRetained(hourAt(10, 30)) {
		t.Error("the retained first reading of the hour withheld: a same-second repeat was taken for it")
	}

	s = newHourlyStream(t)
	s.publish(hourAt(9, 10), `{"temperature":20.1}`, true, true)
	if _, ok := s.publish(hourAt(9, 50), `{"temperature":21.5}`, true, true); ok {
		t.Fatal("hour 9's second delivered live")
	}
	if _, ok := s.publish(hourAt(10, 5), `{"temperature":21.5}`, false, true); !ok {
		t.Fatal("hour 10's first held back")
	}
	if s.sendRetained(hourAt(10, 30)) {
		t.Error("the retained 9:50 reading, the second of hour 9, sent in hour 10 after hour 10's first: two deliveries in the hour")
	}
}

// Live readings by topic alias (mochi hands each the string it keeps for
// the alias, as it did the retained one's) are judged by their own time,
// and a retained reading replaced while a subscription collects it by the
// old one's: the first reading of each hour goes out, no second.
func TestRetainedAndAliasedReadingsJudgedByTheirOwnTime(t *testing.T) {
	at := func(hh, mm int) time.Time { return time.Date(2026, 11, 26, hh, mm, 0, 0, time.UTC) }
	clock := &settableClock{}
	f := hourlyDoctor(t, clock)
	h := f.enforcer
	sensor := f.client("sensor-1", policies.ThingPrincipal("sensor-1"))
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	begin := func(when time.Time, topic, payload string, retain bool) (packets.Packet, bool) {
		clock.Set(when)
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: retain}, TopicName: topic, Payload: []byte(payload)}
		pk.Properties.TopicAliasFlag, pk.Properties.TopicAlias = true, 1
		// As mochi's processPublish: the alias resolved, OnPublish, the
		// retained copy, the fan-out.
		pk.TopicName = sensor.State.TopicAliases.Inbound.Set(pk.Properties.TopicAlias, pk.TopicName)
		pk, err := h.OnPublish(sensor, pk)
		if err != nil {
			t.Fatal(err)
		}
		if retain {
			f.server.Topics.RetainMessage(pk.Copy(false))
		}
		return pk, h.OnACLCheck(doctor, pk.TopicName, false)
	}
	pk, ok := begin(at(9, 5), strings.Clone(memoTopic), `{"temperature":21.5}`, true)
	if !ok {
		t.Fatal("hour 9's first reading (retained, setting alias 1) held back")
	}
	h.OnPublished(sensor, pk)
	pk, ok = begin(at(9, 30), "", `{"temperature":21.6}`, true)
	if ok {
		t.Fatal("hour 9's second reading delivered live")
	}
	h.OnPublished(sensor, pk)
	clock.Set(at(10, 5))
	old := f.server.Topics.Messages(memoTopic)[0]                // the doctor subscribes: mochi takes the retained 9:30
	pk, ok = begin(at(10, 5), "", `{"temperature":21.7}`, false) // meanwhile hour 10's first, by alias, not retained
	if !ok {
		t.Error("hour 10's first reading, by alias only, held back")
	}
	old.FixedHeader.Retain = true
	if h.OnACLCheck(doctor, old.TopicName, false) && h.OnPacketEncode(doctor, old).FixedHeader.Type == packets.Publish {
		t.Errorf("the retained %s (9:30, second of its hour) sent on subscribe", old.Payload)
	}
	h.OnPublished(sensor, pk)
}

// Concurrent readings of one stream keep its past at most keptReadings
// long, and readers walking it race nothing (-race).
func TestStreamPastStaysShort(t *testing.T) {
	l := NewLiveValues()
	const topic = "things/sensor-1/data/temperature"
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20000; i++ {
				l.keep(topic, &liveReading{raw: []byte(`{"temperature":21.5}`), at: int64(i + 1)}, int64(i), true)
			}
		}(g)
	}
	var rd sync.WaitGroup
	for g := 0; g < 2; g++ {
		rd.Add(1)
		go func() {
			defer rd.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				l.find(topic, []byte(`{"x":1}`), 0)
				l.Value("sensor-1", "temperature", "temperature")
			}
		}()
	}
	wg.Wait()
	close(stop)
	rd.Wait()
	n := 0
	for x := l.latest(topic).past; x != nil; x = x.older.Load() {
		n++
	}
	if n > keptReadings {
		t.Errorf("chain of %d readings after concurrent keeps", n)
	}
}

// sendWill is mochi's sendLWT for a will without a delay: OnWill, the
// retained copy, the fan-out (publishToClient's ACL check, the write
// loop's encode) - no OnPublish, no OnPublished.
func sendWill(t *testing.T, f *deliveryFixture, sensor, doctor *mqtt.Client, when time.Time, payload string, retain bool) (delivered bool) {
	t.Helper()
	w, err := f.enforcer.OnWill(sensor, mqtt.Will{TopicName: memoTopic, Payload: []byte(payload), Retain: retain})
	if err != nil || w.TopicName != memoTopic {
		t.Fatalf("will refused: %v %q", err, w.TopicName)
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: w.Retain}, TopicName: w.TopicName,
		Payload: w.Payload, Origin: sensor.ID, Created: when.Unix()}
	if pk.FixedHeader.Retain {
		f.server.Topics.RetainMessage(pk.Copy(false))
	}
	out := pk.Copy(false)
	out.FixedHeader.Retain = false // not retain-as-published
	delivered = f.enforcer.OnACLCheck(doctor, pk.TopicName, false) && f.enforcer.OnPacketEncode(doctor, out).FixedHeader.Type == packets.Publish
	f.enforcer.OnWillSent(sensor, pk)
	return delivered
}

// A sensor's will on its data topic is a reading of the stream: under one
// an hour, one at 10:30 is not a second delivery in hour 10 to a doctor who
// got 10:05 live (mochi sends a will without OnPublish: the ACL check found
// no fan-out, and judged the retained 10:05 reading, or the empty rate
// book).
func TestWillIsAReadingUnderARate(t *testing.T) {
	at := func(hh, mm int) time.Time { return time.Date(2026, 11, 26, hh, mm, 0, 0, time.UTC) }
	for _, retained := range []bool{true, false} {
		clock := &settableClock{}
		f := hourlyDoctor(t, clock)
		h := f.enforcer
		sensor := f.client("sensor-1", policies.ThingPrincipal("sensor-1"))
		doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
		clock.Set(at(10, 5))
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: retained}, TopicName: strings.Clone(memoTopic),
			Payload: []byte(`{"temperature":21.5}`), Created: at(10, 5).Unix()}
		if _, err := h.OnPublish(sensor, pk); err != nil {
			t.Fatal(err)
		}
		if retained {
			f.server.Topics.RetainMessage(pk.Copy(false))
		}
		if !h.OnACLCheck(doctor, pk.TopicName, false) {
			t.Fatal("hour 10's first reading held back")
		}
		h.OnPublished(sensor, pk)
		clock.Set(at(10, 30))
		if sendWill(t, f, sensor, doctor, at(10, 30), `{"temperature":37.9}`, false) {
			t.Errorf("reading retained %v: the will (10:30) delivered after 10:05 under one an hour: two deliveries in hour 10", retained)
		}
	}
}

// A retained will on the data topic (the sensor died at 11:20, the only
// message of hour 11) goes out under a rate, on its fan-out and on later
// subscriptions: it has its record in the stream's past (without one it
// was withheld for good).
func TestRetainedWillIsARetainedReading(t *testing.T) {
	at := func(hh, mm int) time.Time { return time.Date(2026, 11, 26, hh, mm, 0, 0, time.UTC) }
	clock := &settableClock{}
	f := hourlyDoctor(t, clock)
	h := f.enforcer
	sensor := f.client("sensor-1", policies.ThingPrincipal("sensor-1"))
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	phone := f.client("doctor-phone", policies.UserPrincipal("doctor"))
	clock.Set(at(9, 10))
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, TopicName: strings.Clone(memoTopic),
		Payload: []byte(`{"temperature":20.1}`), Created: at(9, 10).Unix()}
	if _, err := h.OnPublish(sensor, pk); err != nil {
		t.Fatal(err)
	}
	f.server.Topics.RetainMessage(pk.Copy(false))
	h.OnPublished(sensor, pk)
	clock.Set(at(11, 20))
	if !sendWill(t, f, sensor, doctor, at(11, 20), `{"temperature":0}`, true) {
		t.Error("the retained will, the only message of hour 11, withheld on its fan-out")
	}
	for _, when := range []time.Time{at(11, 40), at(15, 0)} {
		clock.Set(when)
		r, _ := f.server.Topics.Retained.Get(memoTopic)
		r.FixedHeader.Retain = true
		if !(h.OnACLCheck(phone, r.TopicName, false) && h.OnPacketEncode(phone, r).FixedHeader.Type == packets.Publish) {
			t.Errorf("%s: the retained will (11:20) withheld on a subscription", when.Format("15:04"))
		}
	}
}

// A will's fan-out ends when mochi has sent it: left in the table of
// fan-outs, it was taken for the message of a retained reading sent on a
// later subscription, which it withheld under a rate (the will not the
// first of its hour) or under any rewriting view (a will that is not
// JSON), until a sweep.
func TestWillFanoutEndsWhenSent(t *testing.T) {
	s := newHourlyStream(t)
	if _, ok := s.publish(hourAt(10, 5), `{"temperature":21.5}`, true, true); !ok {
		t.Fatal("hour 10's first reading held back")
	}
	sendWill(t, s.f, s.sensor, s.doctor, hourAt(10, 30), `{"temperature":37.9}`, false)
	if !s.sendRetained(hourAt(10, 31)) {
		t.Error("the retained 10:05 reading (hour 10's first) withheld: judged by the 10:30 will")
	}

	clock := &settableClock{}
	clock.Set(hourAt(10, 5))
	f := newDeliveryFixture(t, clock) // rounding to 0.1, no rate
	sensor := f.client("sensor-1", policies.ThingPrincipal("sensor-1"))
	doctor := f.client("doctor-0", policies.UserPrincipal("doctor"))
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true}, TopicName: strings.Clone(memoTopic),
		Payload: []byte(`{"temperature":21.5}`), Created: clock.Now().Unix()}
	if _, err := f.enforcer.OnPublish(sensor, pk); err != nil {
		t.Fatal(err)
	}
	f.server.Topics.RetainMessage(pk.Copy(false))
	f.enforcer.OnPublished(sensor, pk)
	clock.Add(time.Minute)
	sendWill(t, f, sensor, doctor, clock.Now(), `offline`, false)
	r, _ := f.server.Topics.Retained.Get(memoTopic)
	r.FixedHeader.Retain = true
	if !(f.enforcer.OnACLCheck(doctor, r.TopicName, false) && f.enforcer.OnPacketEncode(doctor, r).FixedHeader.Type == packets.Publish) {
		t.Error("the retained reading withheld after a will that is not JSON: judged by the will")
	}
}
