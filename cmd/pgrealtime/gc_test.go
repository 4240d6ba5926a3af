package main

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"
)

// The GC target drops to gcPercentMany above gcManyConns connections and
// returns to Go's default below gcFewConns.
func TestTuneGC(t *testing.T) {
	prev := debug.SetGCPercent(gcPercentBase)
	defer debug.SetGCPercent(prev)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var n atomic.Int64
	tctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { tuneGC(tctx, n.Load); close(done) }()
	defer func() { stop(); <-done }()

	percent := func() int {
		s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
		metrics.Read(s)
		return int(s[0].Value.Uint64())
	}
	waitFor := func(want int) {
		t.Helper()
		for percent() != want {
			if ctx.Err() != nil {
				t.Fatalf("GC percent %d, want %d (connections %d)", percent(), want, n.Load())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	n.Store(gcManyConns + 1)
	waitFor(gcPercentMany)
	n.Store(gcFewConns + 1) // between the thresholds: unchanged
	time.Sleep(1500 * time.Millisecond)
	if p := percent(); p != gcPercentMany {
		t.Fatalf("GC percent %d between the thresholds, want %d", p, gcPercentMany)
	}
	n.Store(gcFewConns - 1)
	waitFor(gcPercentBase)
}
