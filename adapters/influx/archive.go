// Package influx is Veil's sensor archive: readings go into InfluxDB (1.8
// through its 2.x-compatible API, or 2.x) through a bounded disk spool, and
// come back out for history queries through Flux.
package influx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/influxdata/influxdb-client-go/v2/api"
	ihttp "github.com/influxdata/influxdb-client-go/v2/api/http"
	"github.com/influxdata/influxdb-client-go/v2/domain"
	"github.com/rs/zerolog"
)

// Config wires an Archive.
type Config struct {
	URL    string // e.g. http://127.0.0.1:8086
	Org    string // InfluxDB 2.x organisation; empty means InfluxDB 1.8
	Bucket string // 2.x bucket; 1.8: "db/rp" or "db" (default retention policy)
	Token  string // 2.x token; 1.8: "user:pass" or empty

	SpoolDir string // where unacknowledged points wait
	SpoolMax int64  // bound of the spool in bytes; 0 = DefaultSpoolMax

	BatchBytes    int           // largest write request body; 0 = 1 MiB
	FlushInterval time.Duration // longest a point waits for a fuller batch; 0 = 100 ms
	SyncInterval  time.Duration // fsync period of the spool; 0 = 1 s
	Log           zerolog.Logger
}

// DefaultSpoolMax bounds the spool unless configured: about five million
// typical readings.
const DefaultSpoolMax = 1 << 30

// Archive writes readings to InfluxDB asynchronously and answers history
// queries. Append never waits on InfluxDB.
type Archive struct {
	cfg    Config
	client influxdb2.Client
	write  api.WriteAPIBlocking
	query  api.QueryAPI
	spool  *Spool
	log    zerolog.Logger
	v1     bool
	db, rp string
	bucket string // as Flux names it

	written, rejected, invalid, skipped, failures atomic.Int64
	up                                            atomic.Bool
	ensured                                       atomic.Bool
	lastWarn                                      atomic.Int64 // unix ns of the last overflow warning

	stop   context.CancelFunc
	ctx    context.Context
	done   chan struct{}
	closed sync.Once
}

// Open starts the archive. It does not wait for InfluxDB: the database or
// bucket is created (if missing) by the writer once InfluxDB answers, and
// until then readings wait in the spool.
func Open(cfg Config) (*Archive, error) {
	if cfg.URL == "" {
		return nil, errors.New("influx: no URL")
	}
	if _, err := url.ParseRequestURI(cfg.URL); err != nil {
		return nil, fmt.Errorf("influx URL %q: %v", cfg.URL, err)
	}
	if cfg.Bucket == "" {
		return nil, errors.New("influx: no bucket")
	}
	if cfg.SpoolDir == "" {
		return nil, errors.New("influx: no spool directory")
	}
	if cfg.SpoolMax == 0 {
		cfg.SpoolMax = DefaultSpoolMax
	}
	if cfg.BatchBytes <= 0 {
		cfg.BatchBytes = 1 << 20
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 100 * time.Millisecond
	}
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = time.Second
	}
	a := &Archive{cfg: cfg, log: cfg.Log, v1: cfg.Org == "", done: make(chan struct{})}
	a.bucket = cfg.Bucket
	if a.v1 {
		a.db, a.rp, _ = strings.Cut(cfg.Bucket, "/")
		if a.db == "" {
			return nil, fmt.Errorf("influx bucket %q: want db or db/rp for InfluxDB 1.8", cfg.Bucket)
		}
		if a.rp == "" {
			a.bucket = a.db + "/"
		}
	}
	sp, err := OpenSpool(cfg.SpoolDir, cfg.SpoolMax, cfg.Log)
	if err != nil {
		return nil, err
	}
	a.spool = sp
	opts := influxdb2.DefaultOptions().SetHTTPRequestTimeout(15).SetLogLevel(0)
	a.client = influxdb2.NewClientWithOptions(strings.TrimRight(cfg.URL, "/"), cfg.Token, opts)
	a.write = a.client.WriteAPIBlocking(cfg.Org, cfg.Bucket)
	a.query = a.client.QueryAPI(cfg.Org)
	a.ctx, a.stop = context.WithCancel(context.Background())
	go a.run()
	return a, nil
}

// SpoolPath is where the archive spools under a data dir.
func SpoolPath(dataDir string) string { return filepath.Join(dataDir, "archive-spool") }

// Append queues a reading. It returns once the point is in the spool (in
// the kernel: a crash of the process does not lose it), never waiting on
// InfluxDB. A reading that is no JSON object with a storable field is
// refused with ErrNotAReading; a full spool refuses with ErrSpoolFull
// (counted, and warned about at most every 10 s). Fields InfluxDB cannot
// hold (see walker) are left out and counted.
func (a *Archive) Append(r Reading) error {
	bp := linePool.Get().(*[]byte)
	defer linePool.Put(bp)
	line, skipped, err := appendLine((*bp)[:0], r)
	*bp = line
	if skipped > 0 {
		a.skipped.Add(int64(skipped))
	}
	if err != nil {
		a.invalid.Add(1)
		return err
	}
	return a.AppendLine(line)
}

var linePool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// AppendLine queues one line of line protocol ending in a newline.
func (a *Archive) AppendLine(line []byte) error {
	err := a.spool.Append(line)
	if errors.Is(err, ErrSpoolFull) {
		now := time.Now().UnixNano()
		if last := a.lastWarn.Load(); now-last > int64(10*time.Second) && a.lastWarn.CompareAndSwap(last, now) {
			a.log.Warn().Int64("overflow_total", a.spool.Overflow()).Int64("spool_bytes", a.spool.Len()).
				Int64("spool_max", a.spool.Max()).Msg("archive spool full: readings are not archived until InfluxDB catches up")
		}
	}
	return err
}

// Backlog reports whether readings spooled before the archive was opened
// (before a restart) are not all in InfluxDB yet: until they are, a query
// for a stream's latest reading may miss one taken after it.
func (a *Archive) Backlog() bool { return a.spool.Backlog() }

// Stats are the archive's counters.
type Stats struct {
	Written    int64 // points InfluxDB acknowledged
	Rejected   int64 // points InfluxDB refused as invalid (e.g. a field type conflict)
	Invalid    int64 // readings that were not archivable JSON objects
	Skipped    int64 // fields left out of archived readings: InfluxDB cannot hold them
	Overflow   int64 // points refused because the spool was full
	Failures   int64 // failed write attempts (retried)
	SpoolBytes int64 // unacknowledged bytes in the spool
	SpoolMax   int64
	Up         bool // the last write attempt succeeded
}

// Stats returns the current counters.
func (a *Archive) Stats() Stats {
	return Stats{Written: a.written.Load(), Rejected: a.rejected.Load(), Invalid: a.invalid.Load(),
		Skipped:  a.skipped.Load(),
		Overflow: a.spool.Overflow(), Failures: a.failures.Load(), SpoolBytes: a.spool.Len(),
		SpoolMax: a.spool.Max(), Up: a.up.Load()}
}

// Drain waits until the spool is empty (everything appended so far is in
// InfluxDB) or ctx ends.
func (a *Archive) Drain(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for a.spool.Len() > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("archive: %d bytes still spooled: %w", a.spool.Len(), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Close stops the archive: it writes what it can within ctx, and what is
// left stays in the spool for the next start.
func (a *Archive) Close(ctx context.Context) error {
	var err error
	a.closed.Do(func() {
		if a.up.Load() {
			_ = a.Drain(ctx)
		}
		a.stop()
		<-a.done
		err = a.spool.Close()
		a.client.Close()
		if n := a.spool.Len(); n > 0 {
			a.log.Info().Int64("bytes", n).Msg("archive stopped with readings still spooled; they are sent at the next start")
		}
	})
	return err
}

// run is the writer: it ensures the database, then sends the spool in
// batches, oldest first, retrying with backoff while InfluxDB is away.
func (a *Archive) run() {
	defer close(a.done)
	syncT := time.NewTicker(a.cfg.SyncInterval)
	defer syncT.Stop()
	go func() {
		for {
			select {
			case <-a.ctx.Done():
				return
			case <-syncT.C:
				if err := a.spool.Sync(); err != nil {
					a.log.Warn().Err(err).Msg("archive spool: sync")
				}
			}
		}
	}()
	backoff := newBackoff()
	var pendingSince time.Time
	var inflight []flight
	defer func() {
		for _, f := range inflight {
			<-f.done
		}
	}()
	for {
		if a.ctx.Err() != nil {
			return
		}
		if !a.ensured.Load() {
			if err := a.ensure(a.ctx); err != nil {
				a.failed(err, "creating the InfluxDB database or bucket")
				if !backoff.wait(a.ctx) {
					return
				}
				continue
			}
			a.ensured.Store(true)
		}
		// Keep up to pipelineDepth batches in flight: InfluxDB parses one
		// while the next travels.
		for len(inflight) < pipelineDepth {
			b, ok, err := a.spool.Next(a.cfg.BatchBytes)
			if err != nil {
				a.log.Error().Err(err).Msg("archive spool: read")
				break
			}
			if !ok {
				break
			}
			if len(inflight) == 0 && len(b.Data) < a.cfg.BatchBytes/2 {
				// Wait a little for a fuller batch.
				if pendingSince.IsZero() {
					pendingSince = time.Now()
				}
				if wait := a.cfg.FlushInterval - time.Since(pendingSince); wait > 0 {
					a.spool.Rewind()
					select {
					case <-a.ctx.Done():
						return
					case <-time.After(wait):
					}
					continue
				}
			}
			pendingSince = time.Time{}
			f := flight{b: b, done: make(chan sendResult, 1)}
			go func() { f.done <- a.send(f.b) }()
			inflight = append(inflight, f)
		}
		if len(inflight) == 0 {
			select {
			case <-a.ctx.Done():
				return
			case <-a.spool.Notify():
			}
			continue
		}
		res := <-inflight[0].done
		if res.err == nil {
			b := inflight[0].b
			a.spool.Ack(b)
			a.written.Add(int64(b.Lines) - res.rejected)
			a.rejected.Add(res.rejected)
			a.recovered()
			inflight = inflight[1:]
			backoff.reset()
			continue
		}
		// Failed: whatever else was in flight is sent again (InfluxDB
		// overwrites identical points), from the oldest unacknowledged.
		for _, f := range inflight[1:] {
			<-f.done
		}
		inflight = nil
		a.spool.Rewind()
		if a.ctx.Err() != nil {
			return
		}
		a.failed(res.err, "writing to InfluxDB")
		if !backoff.wait(a.ctx) {
			return
		}
	}
}

// pipelineDepth is how many write requests are in flight at once.
const pipelineDepth = 2

type flight struct {
	b    Batch
	done chan sendResult
}

type sendResult struct {
	err      error
	rejected int64 // points InfluxDB refused as invalid (the batch is done)
}

var droppedRe = regexp.MustCompile(`dropped=(\d+)`)

// send writes one batch. A nil error means it may be acknowledged.
func (a *Archive) send(b Batch) sendResult {
	rejected, err := a.writeLines(b.Data, b.Lines)
	if err != nil {
		return sendResult{err: err}
	}
	return sendResult{rejected: rejected}
}

// writeLines writes n lines of line protocol and returns how many of them
// InfluxDB refused as invalid (it will never take them: they are done).
//
// InfluxDB 1.8 writes the valid points of a request and says how many it
// dropped (a partial write; a line that did not parse it reports by name,
// with dropped=0). InfluxDB 2.x refuses the whole request when one line
// does not parse (400 "unable to parse", no count): acknowledging the
// batch as refused would lose the readings of every owner in it for one
// thing's bad line. So a batch refused whole is split in halves, each sent
// again, until the line refused is alone: only it is lost.
func (a *Archive) writeLines(data []byte, n int) (int64, error) {
	ctx, cancel := context.WithTimeout(a.ctx, 20*time.Second)
	err := a.write.WriteRecord(ctx, string(data))
	cancel()
	if err == nil {
		return 0, nil
	}
	var he *ihttp.Error
	status := 0
	switch {
	case a.ctx.Err() != nil:
		return 0, err
	case strings.Contains(err.Error(), "malformed MIME header"):
		// InfluxDB answered, with a header Go refuses: it echoes what it
		// refused, and something in it was a control byte. Taken for an
		// outage, the batch would be sent again for ever, every owner's
		// readings waiting behind it: it is a refusal.
		status = http.StatusBadRequest
	case errors.As(err, &he):
		status = he.StatusCode
	default:
		return 0, err
	}
	switch status {
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		msg := err.Error()
		if m := droppedRe.FindStringSubmatch(msg); m != nil {
			// A partial write: the valid points are in.
			dropped, _ := strconv.ParseInt(m[1], 10, 64)
			dropped = min(dropped+int64(strings.Count(msg, "unable to parse")), int64(n))
			a.log.Warn().Err(err).Int64("rejected", dropped).Int("batch", n).Msg("InfluxDB refused invalid points")
			return dropped, nil
		}
		if n <= 1 {
			a.log.Warn().Err(err).Msg("InfluxDB refused an invalid point")
			return int64(n), nil
		}
		half := n / 2
		cut := 0
		for range half {
			cut += bytes.IndexByte(data[cut:], '\n') + 1
		}
		first, err := a.writeLines(data[:cut], half)
		if err != nil {
			return 0, err // the batch is sent again whole: InfluxDB overwrites identical points
		}
		second, err := a.writeLines(data[cut:], n-half)
		if err != nil {
			return 0, err
		}
		return first + second, nil
	case http.StatusNotFound:
		a.ensured.Store(false) // the database or bucket went away
	}
	return 0, err
}

func (a *Archive) failed(err error, what string) {
	a.failures.Add(1)
	if a.up.Swap(false) || a.failures.Load() == 1 {
		a.log.Warn().Err(err).Int64("spool_bytes", a.spool.Len()).Msg(what + " failed; readings wait in the spool and are retried")
	}
}

func (a *Archive) recovered() {
	if !a.up.Swap(true) && a.failures.Load() > 0 {
		a.log.Info().Int64("spool_bytes", a.spool.Len()).Msg("InfluxDB is back; draining the spool")
	}
}

// ensure creates the database (1.8) or bucket (2.x) if it is missing.
func (a *Archive) ensure(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if a.v1 {
		if err := a.v1Query(ctx, fmt.Sprintf("CREATE DATABASE %s", quoteIdent(a.db))); err != nil {
			return err
		}
		if a.rp != "" && a.rp != "autogen" {
			err := a.v1Query(ctx, fmt.Sprintf("CREATE RETENTION POLICY %s ON %s DURATION INF REPLICATION 1", quoteIdent(a.rp), quoteIdent(a.db)))
			if err != nil && !strings.Contains(err.Error(), "already exists") {
				return err
			}
		}
		return nil
	}
	// Look the bucket up in our organisation (a name alone may match
	// another organisation's bucket).
	found, err := a.client.APIClient().GetBuckets(ctx, &domain.GetBucketsParams{Org: &a.cfg.Org, Name: &a.cfg.Bucket})
	switch {
	case err == nil && found.Buckets != nil && len(*found.Buckets) > 0:
		return nil
	case err != nil && !strings.Contains(err.Error(), "not found"):
		return fmt.Errorf("looking up bucket %q: %w", a.cfg.Bucket, err)
	}
	org, err := a.client.OrganizationsAPI().FindOrganizationByName(ctx, a.cfg.Org)
	if err != nil {
		return fmt.Errorf("looking up organisation %q: %w", a.cfg.Org, err)
	}
	if _, err := a.client.BucketsAPI().CreateBucketWithName(ctx, org, a.cfg.Bucket); err != nil {
		return fmt.Errorf("creating bucket %q: %w", a.cfg.Bucket, err)
	}
	a.log.Info().Str("bucket", a.cfg.Bucket).Str("org", a.cfg.Org).Msg("created the InfluxDB bucket")
	return nil
}

// v1Query runs an InfluxQL statement through the 1.x query API.
func (a *Archive) v1Query(ctx context.Context, q string) error {
	form := url.Values{"q": {q}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(a.cfg.URL, "/")+"/query", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user, pass, ok := strings.Cut(a.cfg.Token, ":"); ok {
		req.SetBasicAuth(user, pass)
	} else if a.cfg.Token != "" {
		req.Header.Set("Authorization", "Token "+a.cfg.Token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d: %s", q, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if strings.Contains(string(body), `"error"`) {
		return fmt.Errorf("%s: %s", q, strings.TrimSpace(string(body)))
	}
	return nil
}

// quoteIdent quotes an InfluxQL identifier.
func quoteIdent(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// backoff doubles from 100 ms to 5 s.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 100 * time.Millisecond} }
func (b *backoff) reset()  { b.d = 100 * time.Millisecond }
func (b *backoff) wait(ctx context.Context) bool {
	t := time.NewTimer(b.d)
	defer t.Stop()
	b.d = min(2*b.d, 5*time.Second)
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
