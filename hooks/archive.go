package hooks

import (
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"

	"github.com/veil-iot/veil/policies"
)

// Reading is an accepted publish on things/{thing}/data/{stream}, with the
// thing's owner, kind and place at the time it arrived.
type Reading struct {
	Thing, Stream, Owner, Kind, Place string
	Payload                           []byte
	Received                          time.Time
}

// ArchiveSink stores readings. Archive must return quickly and never wait
// on a remote service: it runs in the publisher's goroutine, before the
// PUBACK of a QoS 1 publish, so that an acknowledged reading is safe. The
// payload is mochi's: a sink that keeps it beyond the call copies it.
type ArchiveSink interface {
	Archive(Reading) error
}

// Archiver is the hook that hands every accepted reading to the archive.
// Add it after the enforcer: mochi runs OnPublish hooks in order and stops
// at the first that refuses, so the archiver sees only accepted publishes.
type Archiver struct {
	mqtt.HookBase
	engine  *policies.Engine
	sink    ArchiveSink
	log     zerolog.Logger
	metrics *Metrics
	live    *LiveValues
}

// ArchiverConfig wires an Archiver.
type ArchiverConfig struct {
	Engine  *policies.Engine
	Sink    ArchiveSink
	Log     zerolog.Logger
	Metrics *Metrics // nil: not counted
	// Live is the enforcer's: a reading is archived at the time the
	// enforcer took it, so that a rate releases the same reading live and
	// through $history (firstOfPeriod). nil: the time it is archived.
	Live *LiveValues
}

// NewArchiver returns the hook.
func NewArchiver(c ArchiverConfig) *Archiver {
	return &Archiver{engine: c.Engine, sink: c.Sink, log: c.Log, metrics: c.Metrics, live: c.Live}
}

// ID names the hook.
func (h *Archiver) ID() string { return "veil-archive" }

// Provides lists the events the archiver handles.
func (h *Archiver) Provides(b byte) bool { return b == mqtt.OnPublish }

// OnPublish archives a reading. A reading the archive cannot take (not a
// JSON object, spool full) is counted and still delivered and acknowledged:
// the archive never blocks or refuses live data.
func (h *Archiver) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline || pk.FixedHeader.Type != packets.Publish || len(pk.TopicName) < 7 || pk.TopicName[0] != 't' {
		return pk, nil
	}
	res, ok := policies.ParseTopic(pk.TopicName)
	if !ok || res.Kind != policies.ResData {
		return pk, nil
	}
	received := time.Now()
	if h.live != nil {
		// The enforcer's OnPublish, just before, kept this very packet.
		if rd := h.live.latest(pk.TopicName); rd != nil && rd.at != 0 && sameBytes(rd.raw, pk.Payload) {
			received = time.Unix(0, rd.at)
		}
	}
	h.archive(res, pk.TopicName, pk.Payload, received)
	return pk, nil
}

// ArchiveWill archives a will that goes out on a data topic, taken by the
// enforcer at at as a reading of its stream (Enforcer.ArchiveWills):
// mochi sends a will without OnPublish, and a will a data.* condition
// reads live (a hub's fail-safe {"private":true}) must be in the archive
// for history to read it too.
func (h *Archiver) ArchiveWill(topic string, payload []byte, at time.Time) {
	if res, ok := policies.ParseTopic(topic); ok && res.Kind == policies.ResData {
		h.archive(res, topic, payload, at)
	}
}

func (h *Archiver) archive(res policies.Resource, topic string, payload []byte, received time.Time) {
	r := Reading{Thing: res.Thing, Stream: res.Name, Payload: payload, Received: received}
	if t, ok := h.engine.Thing(res.Thing); ok {
		r.Owner, r.Kind, r.Place = t.Owner, string(t.Kind), t.Place
	}
	if err := h.sink.Archive(r); err != nil {
		h.count("archive_refused")
		h.log.Debug().Err(err).Str("topic", topic).Msg("reading not archived")
	}
}

func (h *Archiver) count(what string) {
	if h.metrics != nil {
		h.metrics.count(what)
	}
}
