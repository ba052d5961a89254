// Command gapprobe measures how often this machine takes the processor
// away from a running thread: it spins reading the monotonic clock for the
// given duration and reports, per second of its own running, the gaps
// between two readings longer than 20, 80, 200 and 1,000 µs. Run it beside
// a benchmark to see what any code running that long is exposed to:
//
//	go run ./scripts/bench/gapprobe 3s
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	d := 3 * time.Second
	if len(os.Args) > 1 {
		var err error
		if d, err = time.ParseDuration(os.Args[1]); err != nil {
			fmt.Fprintln(os.Stderr, "gapprobe: duration:", err)
			os.Exit(2)
		}
	}
	bounds := []time.Duration{20 * time.Microsecond, 80 * time.Microsecond, 200 * time.Microsecond, time.Millisecond}
	over := make([]int, len(bounds))
	var running time.Duration
	end := time.Now().Add(d)
	last := time.Now()
	for last.Before(end) {
		now := time.Now()
		gap := now.Sub(last)
		last = now
		if gap <= bounds[0] {
			running += gap
		}
		for i, b := range bounds {
			if gap > b {
				over[i]++
			}
		}
	}
	for i, b := range bounds {
		fmt.Printf("gaps over %v: %.1f per second of running\n", b, float64(over[i])/running.Seconds())
	}
}
