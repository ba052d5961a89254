package hooks

import _ "unsafe" // go:linkname

// cputicks reads the processor's time-stamp counter where it has one
// (RDTSC on amd64: a few nanoseconds) and the monotonic clock elsewhere
// (arm64). Its unit is unknown, so callers convert ticks to time by a span
// they also measured with the clock. The runtime keeps it linkable for
// packages outside the standard library (go.dev/issue/67401).
//
//go:linkname cputicks runtime.cputicks
func cputicks() int64
