package main

import (
	"context"
	"fmt"
	"time"
)

type memoryPoint struct {
	Conns      int     `json:"connections"`
	RSSKB      int64   `json:"rss_kb"`
	PerConnKB  float64 `json:"per_conn_kb"`
	HeapKB     float64 `json:"heap_inuse_per_conn_kb"`  // from /metrics, when exported
	StackKB    float64 `json:"stack_inuse_per_conn_kb"` // from /metrics, when exported
	Goroutines float64 `json:"goroutines_per_conn"`
}

type memoryResult struct {
	BaseRSSKB int64         `json:"base_rss_kb"`
	Points    []memoryPoint `json:"points"`
	Metrics   bool          `json:"metrics"` // Go runtime metrics were available
}

type goMem struct{ heap, stack, goroutines float64 }

func (s *server) goMem(ctx context.Context) (goMem, bool) {
	h, ok1 := s.metric(ctx, "go_memstats_heap_inuse_bytes")
	st, ok2 := s.metric(ctx, "go_memstats_stack_inuse_bytes")
	g, ok3 := s.metric(ctx, "go_goroutines")
	return goMem{h, st, g}, ok1 && ok2 && ok3
}

// memory measures the server's RSS growth per idle, subscribed connection.
// The clients live in their own processes (at most 10 000 each: the
// open-file limit is per process).
func (e *benchEnv) memory(ctx context.Context) (*memoryResult, error) {
	r := &memoryResult{}
	srv, err := e.startReady(ctx, "--max-connections", "25000")
	if err != nil {
		return r, err
	}
	defer srv.stop()
	// Warm-up: a round of connections opened and closed.
	warm, err := startClients(ctx, e.self, srv.URL(), e.token, min(100, e.cfg.IdleConns[0]), "bench.*")
	if err != nil {
		return r, err
	}
	warm.quit()
	time.Sleep(2 * time.Second)
	if r.BaseRSSKB, err = rssKB(srv.Pid()); err != nil {
		return r, err
	}
	base, hasMetrics := srv.goMem(ctx)
	r.Metrics = hasMetrics
	e.logf("   baseline RSS %d KiB", r.BaseRSSKB)
	held := 0
	for _, n := range e.cfg.IdleConns {
		cp, err := startClients(ctx, e.self, srv.URL(), e.token, n-held, "bench.*")
		if err != nil {
			return r, fmt.Errorf("open connections %d..%d: %w", held+1, n, err)
		}
		defer cp.quit()
		held = n
		time.Sleep(e.cfg.IdleWait)
		p := memoryPoint{Conns: n}
		if p.RSSKB, err = rssKB(srv.Pid()); err != nil {
			return r, err
		}
		p.PerConnKB = float64(p.RSSKB-r.BaseRSSKB) / float64(n)
		if m, ok := srv.goMem(ctx); ok && hasMetrics {
			p.HeapKB = (m.heap - base.heap) / 1024 / float64(n)
			p.StackKB = (m.stack - base.stack) / 1024 / float64(n)
			p.Goroutines = (m.goroutines - base.goroutines) / float64(n)
		}
		r.Points = append(r.Points, p)
		e.logf("   %d idle connections: RSS %d KiB, %.1f KiB per connection (heap %.1f, stacks %.1f KiB, %.1f goroutines per connection)",
			n, p.RSSKB, p.PerConnKB, p.HeapKB, p.StackKB, p.Goroutines)
	}
	return r, nil
}
