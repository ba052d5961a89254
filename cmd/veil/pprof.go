package main

import (
	"net/http"
	_ "net/http/pprof" // registers on http.DefaultServeMux, which only this listener serves
	"os"
)

// serveBenchPprof serves Go's profiler on the loopback address in the
// environment variable env (VEIL_BENCH_PPROF for veil serve,
// VEIL_LOADGEN_PPROF for veil bench, e.g. 127.0.0.1:6060) when it is set:
// for benchmark and profiling runs only. The broker's own HTTP endpoints use
// their own mux and never expose it.
func serveBenchPprof(env string) {
	if addr := os.Getenv(env); addr != "" {
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
}
