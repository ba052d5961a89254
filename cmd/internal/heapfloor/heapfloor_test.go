package heapfloor

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
	"time"
)

const mib = 1 << 20

func TestGOGCFor(t *testing.T) {
	for _, tc := range []struct {
		name               string
		floor, live, roots uint64
		base, want         int
	}{
		{"small heap: the goal is the floor", 64 * mib, 6 * mib, 2 * mib, 100, 725}, // 6 + 8×7.25 = 64
		{"live heap above the floor: Go's own", 64 * mib, 80 * mib, 1 * mib, 100, 100},
		{"base already reaches the floor", 64 * mib, 40 * mib, 1 * mib, 100, 100},
		{"a higher base from GOGC is kept", 64 * mib, 20 * mib, 0, 300, 300},
		{"a lower base from GOGC is raised", 64 * mib, 20 * mib, 0, 50, 220},
		{"tiny heap: capped so Go's 4 MiB minimum × GOGC stays at the floor", 64 * mib, 1 * mib, 0, 100, 1600},
		{"nothing measured yet", 64 * mib, 0, 0, 100, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := GOGCFor(tc.floor, tc.live, tc.roots, tc.base); got != tc.want {
				t.Errorf("GOGCFor(floor %d MiB, live %d MiB, roots %d MiB, base %d) = %d, want %d",
					tc.floor/mib, tc.live/mib, tc.roots/mib, tc.base, got, tc.want)
			}
		})
	}
}

// TestFloorFollowsTheLiveHeap runs the real collector: with a small live
// heap the goal rises to the floor, with a live heap above the floor the
// GOGC in force before is back, and Stop restores it for good.
func TestFloorFollowsTheLiveHeap(t *testing.T) {
	base := debug.SetGCPercent(100)
	defer debug.SetGCPercent(base)

	const floor = 64 * mib
	f := Start(floor)
	defer f.Stop()
	goal := func() uint64 {
		s := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: GOGC %d, heap goal %d MiB", what, f.Percent(), goal()/mib)
			}
			runtime.GC()
			time.Sleep(10 * time.Millisecond)
		}
	}

	waitFor("small heap, goal at the floor", func() bool {
		g := goal()
		return f.Percent() > 100 && g >= floor*9/10 && g <= floor*11/10
	})

	big := make([]byte, 96*mib) // live and above the floor
	waitFor("live heap above the floor, GOGC back to 100", func() bool { return f.Percent() == 100 })
	if g := goal(); g < 2*96*mib*9/10 {
		t.Errorf("heap goal %d MiB with 96 MiB live, want about twice that", g/mib)
	}
	runtime.KeepAlive(big)

	waitFor("small again", func() bool { return f.Percent() > 100 })
	f.Stop()
	runtime.GC()
	runtime.GC()
	time.Sleep(50 * time.Millisecond)
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GOGC after Stop = %d, want the 100 in force at Start", got)
	}
}

func TestStartWithoutFloor(t *testing.T) {
	if f := Start(0); f != nil {
		t.Error("Start(0) returned a floor")
	}
	base := debug.SetGCPercent(-1) // GOGC=off: the operator turned the collector off
	defer debug.SetGCPercent(base)
	if f := Start(64 * mib); f != nil {
		f.Stop()
		t.Error("Start with GOGC=off returned a floor")
	}
	if got := debug.SetGCPercent(-1); got != -1 {
		t.Errorf("GOGC = %d after Start with GOGC=off, want it left off", got)
	}
}

// TestDefaultBytes checks the default against the machine's MemTotal, read
// independently from /proc/meminfo.
func TestDefaultBytes(t *testing.T) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Skipf("no /proc/meminfo: %v", err)
	}
	var kib uint64
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kib, err = strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if kib == 0 {
		t.Fatal("no MemTotal in /proc/meminfo")
	}
	want := min(uint64(64*mib), kib*1024/16)
	if got := DefaultBytes(); got != want {
		t.Errorf("DefaultBytes() = %d MiB, want %d MiB (MemTotal %d MiB)", got/mib, want/mib, kib/1024)
	}
}
