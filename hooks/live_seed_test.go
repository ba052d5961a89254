package hooks

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// latestAnswer is a LatestSource with one answer for every stream.
type latestAnswer struct {
	t     time.Time
	found bool
	err   error
	asked int
}

func (l *latestAnswer) Latest(context.Context, string, string, time.Time) (time.Time, []byte, bool, error) {
	l.asked++
	return l.t, nil, l.found, l.err
}

// TestFirstReadingSinceStartFindsTheOneBefore: a stream's first reading
// since start takes, as the reading before it, the archive's (a rate
// withholds it if that was in its period); none in the archive, it is the
// first; an archive that cannot answer makes it not the first (withheld
// under a rate, not released). Only the first reading asks.
func TestFirstReadingSinceStartFindsTheOneBefore(t *testing.T) {
	at := time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC)
	for _, c := range []struct {
		name   string
		src    latestAnswer
		prevAt int64
		first  bool // under one an hour
	}{
		{"archived earlier in the hour", latestAnswer{t: at.Add(-10 * time.Minute), found: true}, at.Add(-10 * time.Minute).UnixNano(), false},
		{"archived the hour before", latestAnswer{t: at.Add(-time.Hour), found: true}, at.Add(-time.Hour).UnixNano(), true},
		{"nothing archived", latestAnswer{}, 0, true},
		{"archive unavailable", latestAnswer{err: errors.New("down")}, at.UnixNano(), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := NewLiveValues()
			l.SeedFrom(&c.src, nil)
			r := &liveReading{raw: []byte(`{"w":1}`), at: at.UnixNano()}
			l.keep("things/meter-1/data/power", r, 0, false)
			if r.prevAt != c.prevAt || firstOfPeriod(r.at, r.prevAt, time.Hour) != c.first {
				t.Errorf("prevAt %d (first of its hour: %v), want %d (%v)", r.prevAt, firstOfPeriod(r.at, r.prevAt, time.Hour), c.prevAt, c.first)
			}
			next := &liveReading{raw: []byte(`{"w":2}`), at: at.Add(time.Minute).UnixNano()}
			l.keep("things/meter-1/data/power", next, 0, false)
			if next.prevAt != r.at || c.src.asked != 1 {
				t.Errorf("the second reading: prevAt %d, want the first's %d; the archive asked %d times, want 1", next.prevAt, r.at, c.src.asked)
			}
		})
	}
}

// TestNoRateNoArchiveQuery: with no rate in force, a stream's first
// reading since start does not ask the archive (a restart of a fleet
// would send every stream's first reading to it for nothing).
func TestNoRateNoArchiveQuery(t *testing.T) {
	src := &latestAnswer{t: time.Now().Add(-time.Minute), found: true}
	l := NewLiveValues()
	rates := false
	l.SeedFrom(src, func() bool { return rates })
	r := &liveReading{raw: []byte(`{"w":1}`), at: time.Now().UnixNano()}
	l.keep("things/meter-1/data/power", r, 0, false)
	if src.asked != 0 || r.prevAt != 0 {
		t.Errorf("without a rate the archive was asked %d times (prevAt %d)", src.asked, r.prevAt)
	}
	rates = true
	l.keep("things/meter-2/data/power", &liveReading{raw: []byte(`{"w":1}`), at: time.Now().UnixNano()}, 0, false)
	if src.asked != 1 {
		t.Errorf("with a rate the archive was asked %d times for a new stream, want 1", src.asked)
	}
}

// blockingLatest is a LatestSource that answers "nothing archived" once
// released, and counts the queries in flight.
type blockingLatest struct {
	release       chan struct{}
	now, most, in atomic.Int32
}

func (b *blockingLatest) Latest(ctx context.Context, _, _ string, _ time.Time) (time.Time, []byte, bool, error) {
	n := b.now.Add(1)
	defer b.now.Add(-1)
	b.in.Add(1)
	for m := b.most.Load(); n > m && !b.most.CompareAndSwap(m, n); m = b.most.Load() {
	}
	select {
	case <-b.release:
		return time.Time{}, nil, false, nil
	case <-ctx.Done():
		return time.Time{}, nil, false, ctx.Err()
	}
}

// TestSeedQueriesBounded: after a restart, a fleet's first readings come at
// once; at most seedQueries of them ask the archive at a time, the others
// wait for room. Those that find none within seedWait are taken as not the
// first (as when the archive cannot answer); the others as the archive says.
func TestSeedQueriesBounded(t *testing.T) {
	src := &blockingLatest{release: make(chan struct{})}
	l := NewLiveValues()
	l.SeedFrom(src, nil)
	at := time.Date(2026, 11, 27, 10, 30, 0, 0, time.UTC).UnixNano()
	const streams = 3 * seedQueries
	readings := make([]*liveReading, streams)
	var wg sync.WaitGroup
	for i := range streams {
		readings[i] = &liveReading{raw: []byte(`{"w":1}`), at: at}
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.keep(fmt.Sprintf("things/meter-%d/data/power", i), readings[i], 0, false)
		}()
	}
	for deadline := time.Now().Add(seedWait / 2); src.in.Load() < seedQueries && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // room for any beyond the bound to come in
	if n := src.now.Load(); n != seedQueries {
		t.Errorf("%d queries in flight, want %d", n, seedQueries)
	}
	close(src.release)
	wg.Wait()
	if m := src.most.Load(); m > seedQueries {
		t.Errorf("%d queries in flight at once, want at most %d", m, seedQueries)
	}
	var first, unknown int
	for _, r := range readings {
		switch r.prevAt {
		case 0:
			first++
		case at:
			unknown++
		default:
			t.Errorf("prevAt %d, want 0 or %d", r.prevAt, at)
		}
	}
	if first+unknown != streams || first < seedQueries || int(src.in.Load()) != first {
		t.Errorf("%d first (archive answered), %d unknown; the archive asked %d times", first, unknown, src.in.Load())
	}
}
