//go:build pprof

package main

// Built with -tags pprof, pgrealtime serves net/http/pprof on the address in
// PGREALTIME_PPROF_ADDR (for example 127.0.0.1:6060). Release builds do not
// include it. Used to profile the benchmark's server (docs/benchmarks.md).

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	if addr := os.Getenv("PGREALTIME_PPROF_ADDR"); addr != "" {
		go http.ListenAndServe(addr, nil)
	}
}
