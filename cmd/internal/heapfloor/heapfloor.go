// Package heapfloor keeps the Go heap from being collected before it has
// grown to a floor.
//
// A broker's live heap is small (a few MB for a household) while it
// allocates a few hundred bytes per delivery in mochi alone. With Go's
// default (GOGC=100) the collector then runs every few MB of allocation and
// marks the whole live heap each time: at 25,000 deliveries per second that
// was about a third of the broker's instructions. Letting the heap grow to a
// floor of tens of MB before collecting makes cycles rare while the heap is
// small, and changes nothing once the live heap is large (10,000 clients, a
// million relation tuples), where Go's proportional goal is above the floor
// anyway. The memory it costs is bounded by the floor, unlike a higher GOGC,
// which multiplies whatever the live heap is.
//
// Go has a ceiling (GOMEMLIMIT), which still applies, but no floor: after
// every collection the floor's GOGC is recomputed from the heap that
// collection found live, so that the next goal is the floor.
package heapfloor

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// goDefaultHeapMinimum is the runtime's smallest heap goal at GOGC=100; it
// scales with GOGC (runtime/mgcpacer.go, defaultHeapMinimum), so a GOGC
// above floor/goDefaultHeapMinimum×100 would overshoot the floor.
const goDefaultHeapMinimum = 4 << 20

// Floor holds the heap goal at or above a number of bytes until Stop.
type Floor struct {
	bytes uint64
	base  int // the GOGC in force before Start: used whenever the live heap is above the floor

	mu      sync.Mutex // orders an adjustment after a collection against Stop
	stopped bool
	samples []metrics.Sample
	percent atomic.Int64 // the GOGC last set
}

// Start sets a floor of the given bytes and returns it. The floor follows
// the live heap from the first collection on. Start(0) returns nil: no
// floor. The GOGC in force (100 unless the environment says otherwise) is
// kept whenever it gives a goal above the floor; a GOGC of off is left off.
func Start(bytes uint64) *Floor {
	if bytes == 0 {
		return nil
	}
	base := debug.SetGCPercent(100)
	debug.SetGCPercent(base)
	if base < 0 {
		return nil
	}
	f := &Floor{bytes: bytes, base: base, samples: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
	}}
	f.percent.Store(int64(base))
	f.arm()
	return f
}

// Stop removes the floor and restores the GOGC that was in force at Start.
func (f *Floor) Stop() {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped {
		f.stopped = true
		debug.SetGCPercent(f.base)
	}
}

// Percent is the GOGC the floor set after the last collection.
func (f *Floor) Percent() int { return int(f.percent.Load()) }

// arm registers a cleanup on a fresh object nothing references: it runs
// after the next collection, which is when the live heap is known.
func (f *Floor) arm() {
	sentinel := new([2]uint64) // not tiny-allocated: the cleanup runs after the cycle that frees it
	runtime.AddCleanup(sentinel, func(f *Floor) {
		if f.adjust() {
			f.arm()
		}
	}, f)
}

// adjust sets the GOGC for the heap the last collection found live, and
// reports whether the floor is still in force.
func (f *Floor) adjust() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return false
	}
	metrics.Read(f.samples)
	percent := GOGCFor(f.bytes, f.samples[0].Value.Uint64(), f.samples[1].Value.Uint64()+f.samples[2].Value.Uint64(), f.base)
	if int64(percent) != f.percent.Load() {
		debug.SetGCPercent(percent)
		f.percent.Store(int64(percent))
	}
	return true
}

// GOGCFor returns the GOGC whose heap goal is the floor, given the live heap
// and the stacks and globals the collector scans, or base if base already
// gives a goal at or above the floor. Go's goal is live + (live + roots) ×
// GOGC/100, and never below 4 MiB × GOGC/100.
func GOGCFor(floor, live, roots uint64, base int) int {
	scanned := live + roots
	if scanned == 0 || live >= floor {
		return base
	}
	if live+scanned*uint64(base)/100 >= floor {
		return base
	}
	percent := (floor - live) * 100 / scanned
	if most := floor * 100 / goDefaultHeapMinimum; percent > most {
		percent = most
	}
	if percent > math.MaxInt32 {
		percent = math.MaxInt32
	}
	if int(percent) < base {
		return base
	}
	return int(percent)
}

// DefaultBytes is the floor Veil uses unless told otherwise: 64 MiB, or a
// sixteenth of the machine's memory where that is less (a Raspberry Pi
// Zero 2 with 512 MB gets 32 MiB).
func DefaultBytes() uint64 {
	const most = 64 << 20
	if total := totalMemory(); total > 0 && total/16 < most {
		return total / 16
	}
	return most
}
