package main

import (
	"net/http"
	_ "net/http/pprof" // registers on http.DefaultServeMux, which only this listener serves
	"os"
)

// serveBenchPprof serves Go's profiler on VEIL_BENCH_PPROF (e.g.
// 127.0.0.1:6060) when it is set: for benchmark and profiling runs only.
// The broker's own HTTP endpoints use their own mux and never expose it.
func serveBenchPprof() {
	if addr := os.Getenv("VEIL_BENCH_PPROF"); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
