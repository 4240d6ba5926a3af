//go:build pprof

package main

// Built with -tags pprof, pgrealtime serves net/http/pprof on the address in
// PGREALTIME_PPROF_ADDR (for example 127.0.0.1:6060), and with
// PGREALTIME_CPUPROFILE_DIR set it writes a CPU profile of its first
// PGREALTIME_CPUPROFILE_SECONDS (default 10) to cpu-<pid>.prof there: the
// way to profile every node of a cluster run at once. Release builds do not
// include it. Used to profile the benchmark's servers (docs/benchmarks.md).

import (
	"fmt"
	"net/http"
	_ "net/http/pprof"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"time"
)

func init() {
	if addr := os.Getenv("PGREALTIME_PPROF_ADDR"); addr != "" {
		go http.ListenAndServe(addr, nil)
	}
	if dir := os.Getenv("PGREALTIME_CPUPROFILE_DIR"); dir != "" {
		secs, err := strconv.ParseFloat(os.Getenv("PGREALTIME_CPUPROFILE_SECONDS"), 64)
		if err != nil || secs <= 0 {
			secs = 10
		}
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("cpu-%d.prof", os.Getpid())))
		if err == nil && pprof.StartCPUProfile(f) == nil {
			time.AfterFunc(time.Duration(secs*float64(time.Second)), func() { pprof.StopCPUProfile(); f.Close() })
		}
	}
}
