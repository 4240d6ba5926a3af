package main

import (
	"context"
	"runtime/debug"
	"time"
)

// Go's garbage collector lets the heap grow to twice what is live before it
// collects (GOGC=100), and keeps about that much from the OS. With many
// idle connections the live heap is mostly their state, and that headroom
// is most of what each one costs in RSS (docs/benchmarks.md, memory). So
// while pgrealtime holds more than gcManyConns connections it lowers the
// target to gcPercentMany (RSS per idle connection 12–15 → 10–11 KiB in
// the benchmark); with fewer (a handful of subscribers taking a heavy
// stream, where collections would cost CPU instead) it keeps Go's default.
// Setting GOGC in the environment turns this off.
const (
	gcManyConns   = 1000
	gcFewConns    = 500 // back to the default below this (hysteresis)
	gcPercentMany = 50
	gcPercentBase = 100
)

// tuneGC adjusts the GC target to the number of connections until ctx ends.
func tuneGC(ctx context.Context, connections func() int64) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	many := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := connections()
		switch {
		case !many && n > gcManyConns:
			many = true
			debug.SetGCPercent(gcPercentMany)
		case many && n < gcFewConns:
			many = false
			debug.SetGCPercent(gcPercentBase)
		}
	}
}
