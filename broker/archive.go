package broker

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/veil-iot/veil/adapters/influx"
	"github.com/veil-iot/veil/hooks"
	"github.com/veil-iot/veil/policies"
)

// archive is the sensor archive (InfluxDB, through a disk spool) and the
// $history query service on it.
type archive struct {
	store   *influx.Archive // nil: archive off
	history *hooks.History

	written, rejected, invalid, skipped, overflow, failures *prometheus.Desc
	spool, spoolMax, up                                     *prometheus.Desc
}

// addArchive wires the InfluxDB sensor archive and $history queries
// (issue 5). With no --influx-url the archive is off: readings are only
// delivered live, and history requests are answered with an error.
func (b *Broker) addArchive(srv *mqtt.Server) error {
	a := &archive{
		written:  prometheus.NewDesc("veil_archive_points_written_total", "Readings InfluxDB acknowledged.", nil, nil),
		rejected: prometheus.NewDesc("veil_archive_points_rejected_total", "Readings InfluxDB refused as invalid (e.g. field type conflict).", nil, nil),
		invalid:  prometheus.NewDesc("veil_archive_readings_invalid_total", "Readings that were no JSON object with a storable field, or named what InfluxDB cannot store.", nil, nil),
		skipped:  prometheus.NewDesc("veil_archive_fields_skipped_total", "Fields left out of archived readings: numbers beyond float64, names InfluxDB cannot store.", nil, nil),
		overflow: prometheus.NewDesc("veil_archive_spool_overflow_total", "Readings not archived because the spool was full.", nil, nil),
		failures: prometheus.NewDesc("veil_archive_write_failures_total", "Failed (retried) InfluxDB write attempts.", nil, nil),
		spool:    prometheus.NewDesc("veil_archive_spool_bytes", "Bytes of readings waiting for InfluxDB.", nil, nil),
		spoolMax: prometheus.NewDesc("veil_archive_spool_max_bytes", "Bound of the archive spool.", nil, nil),
		up:       prometheus.NewDesc("veil_archive_up", "1 if the last InfluxDB write succeeded.", nil, nil),
	}
	if b.cfg.InfluxURL == "" {
		b.log.Info().Msg("sensor archive is off (no --influx-url)")
	} else {
		store, err := influx.Open(influx.Config{
			URL: b.cfg.InfluxURL, Org: b.cfg.InfluxOrg, Bucket: b.cfg.InfluxBucket, Token: b.cfg.InfluxToken,
			SpoolDir: influx.SpoolPath(b.cfg.DataDir), SpoolMax: b.cfg.InfluxSpoolBytes,
			Log: b.log.With().Str("component", "archive").Logger(),
		})
		if err != nil {
			return err
		}
		a.store = store
		b.archive = a
		archiver := hooks.NewArchiver(hooks.ArchiverConfig{
			Engine: b.Engine, Sink: archiveSink{store}, Log: b.log.With().Str("component", "archive").Logger(), Metrics: b.Metrics,
			Live: b.Live,
		})
		if err := srv.AddHook(archiver, nil); err != nil {
			return err
		}
		if b.enforcer != nil {
			b.enforcer.ArchiveWills(archiver.ArchiveWill)
		}
		b.log.Info().Str("url", b.cfg.InfluxURL).Str("bucket", b.cfg.InfluxBucket).Str("org", b.cfg.InfluxOrg).
			Int64("spool_max", b.cfg.InfluxSpoolBytes).Msg("sensor archive on")
	}
	b.archive = a
	if b.enforcer == nil { // --bench-no-enforcement: no sessions, no $history
		return nil
	}
	var src hooks.HistorySource
	if a.store != nil {
		hs := historySource{a: a.store, engine: b.Engine}
		src = hs
		b.Live.SeedFrom(seedSource{hs}, b.Engine.HasRates)
	}
	a.history = hooks.NewHistory(hooks.HistoryConfig{
		Engine: b.Engine, Sessions: b.Sessions, Server: srv, Source: src, Clock: b.cfg.Clock,
		Log: b.log.With().Str("component", "history").Logger(), Metrics: b.Metrics,
		Audit: b.enforcer.Audit, // the enforcer's sink, attached with the control plane after this
	})
	b.enforcer.Attach(nil, a.history)
	return nil
}

// closeArchive stops history queries, then writes what it can of the spool
// within a few seconds; the rest waits on disk for the next start.
func (b *Broker) closeArchive() {
	if b.archive == nil {
		return
	}
	if b.archive.history != nil {
		b.archive.history.Close()
	}
	if b.archive.store != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := b.archive.store.Close(ctx); err != nil {
			b.log.Warn().Err(err).Msg("closing the archive spool")
		}
		cancel()
	}
	b.archive = nil
}

// ArchiveStats returns the archive's counters; ok=false when it is off.
func (b *Broker) ArchiveStats() (st influx.Stats, ok bool) {
	if b.archive == nil || b.archive.store == nil {
		return st, false
	}
	return b.archive.store.Stats(), true
}

// DrainArchive waits until every reading accepted so far is in InfluxDB.
func (b *Broker) DrainArchive(ctx context.Context) error {
	if b.archive == nil || b.archive.store == nil {
		return errors.New("the sensor archive is off")
	}
	return b.archive.store.Drain(ctx)
}

// Describe implements prometheus.Collector.
func (a *archive) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{a.written, a.rejected, a.invalid, a.skipped, a.overflow, a.failures, a.spool, a.spoolMax, a.up} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (a *archive) Collect(ch chan<- prometheus.Metric) {
	if a.store == nil {
		return
	}
	st := a.store.Stats()
	c := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	g := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	c(a.written, st.Written)
	c(a.rejected, st.Rejected)
	c(a.invalid, st.Invalid)
	c(a.skipped, st.Skipped)
	c(a.overflow, st.Overflow)
	c(a.failures, st.Failures)
	g(a.spool, st.SpoolBytes)
	g(a.spoolMax, st.SpoolMax)
	up := int64(0)
	if st.Up {
		up = 1
	}
	g(a.up, up)
}

// archiveSink hands readings from the hook to the adapter.
type archiveSink struct{ a *influx.Archive }

func (s archiveSink) Archive(r hooks.Reading) error {
	return s.a.Append(influx.Reading{Thing: r.Thing, Stream: r.Stream, Owner: r.Owner, Kind: r.Kind, Place: r.Place,
		Payload: r.Payload, Received: r.Received})
}

// historySource rebuilds each archived reading as the JSON object it was
// (nested objects from dotted field names; numbers as stored). It returns
// only the readings archived under the thing's current owner of record
// (the archive tags each reading with the owner of record when it was
// taken; none before a hand-over): after the hand-over the installer's
// readings are not the new owner's, nor, after a thing is deleted and its
// id created again for someone else, the deleted thing's.
type historySource struct {
	a      *influx.Archive
	engine *policies.Engine
}

// errChangedHands ends an answer whose thing changed owner (or went) while
// it was read: the rest was archived under the former owner.
var errChangedHands = errors.New("the thing changed owner during the answer; ask again")

// Latest implements hooks.LatestSource, under the same owner as History.
func (s historySource) Latest(ctx context.Context, thing, stream string, before time.Time) (time.Time, []byte, bool, error) {
	t, ok := s.engine.Thing(thing)
	if !ok {
		return time.Time{}, nil, false, nil
	}
	r, found, err := s.a.Latest(ctx, thing, stream, t.Owner, before)
	if err != nil || !found {
		return time.Time{}, nil, false, err
	}
	data, err := json.Marshal(influx.Unflatten(r.Fields))
	return r.Time, data, err == nil, err
}

var _ hooks.LatestSource = historySource{}

// seedSource is historySource for a stream's first reading since start
// (LiveValues.SeedFrom): while readings spooled before the start are not
// all in InfluxDB, the reading before may be one of them, and the archive
// cannot tell (a rate withholds the reading rather than release a second
// of its period).
type seedSource struct{ historySource }

// errBacklog: readings from before the start are still spooled.
var errBacklog = errors.New("readings from before the start are still on their way to the archive")

func (s seedSource) Latest(ctx context.Context, thing, stream string, before time.Time) (time.Time, []byte, bool, error) {
	if s.a.Backlog() {
		return time.Time{}, nil, false, errBacklog
	}
	return s.historySource.Latest(ctx, thing, stream, before)
}

func (s historySource) History(ctx context.Context, thing, stream string, from, to time.Time, fn func(time.Time, []byte) bool) error {
	t, ok := s.engine.Thing(thing)
	if !ok {
		return nil // no such thing (any more): nothing of it is anyone's
	}
	var stop error
	err := s.a.History(ctx, thing, stream, t.Owner, from, to, func(r influx.Row) bool {
		if now, ok := s.engine.Thing(thing); !ok || now.Owner != t.Owner {
			stop = errChangedHands
			return false
		}
		data, err := json.Marshal(influx.Unflatten(r.Fields))
		if err != nil {
			stop = err
			return false
		}
		return fn(r.Time, data)
	})
	if err == nil {
		err = stop
	}
	return err
}
