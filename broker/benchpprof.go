package broker

import (
	"net/http"
	_ "net/http/pprof" // registers on http.DefaultServeMux, served only when VEIL_BENCH_PPROF is set
	"os"
)

// VEIL_BENCH_PPROF=127.0.0.1:6060 serves Go's profiler on that address
// (benchmark and profiling only; the broker's own HTTP endpoints use their
// own mux and never expose it).
func init() {
	if addr := os.Getenv("VEIL_BENCH_PPROF"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
