package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

type latencyResult struct {
	Subs     int     `json:"subscribers"`
	Rate     int     `json:"rows_per_s"` // target
	Seconds  float64 `json:"seconds"`
	Written  int     `json:"written"`
	Lat      Latency `json:"latency"`
	Expected uint64  `json:"expected"` // written × subscribers
	Closed   int64   `json:"closed"`
}

// latency measures commit → client receive with single-row transactions at
// a steady rate: the event's timestamp is the commit time (Postgres's
// clock), the receive time is taken by the client process on the same
// machine, so both read the same system clock.
func (e *benchEnv) latency(ctx context.Context, srv *server) ([]latencyResult, error) {
	type scenario struct{ subs, rate int }
	var sc []scenario
	for _, n := range e.cfg.LatencySubs {
		sc = append(sc, scenario{n, e.cfg.LatencyRate})
	}
	sc = append(sc, scenario{e.cfg.LatencyManySubs, e.cfg.LatencyManyRate})
	var out []latencyResult
	for _, s := range sc {
		r, err := e.latencyOne(ctx, srv, s.subs, s.rate)
		if err != nil {
			return out, fmt.Errorf("%d subscribers at %d rows/s: %w", s.subs, s.rate, err)
		}
		e.logf("   %d rows/s to %d subscribers: p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d of %d deliveries)",
			s.rate, s.subs, r.Lat.P50, r.Lat.P99, r.Lat.Max, r.Lat.Count, r.Expected)
		out = append(out, r)
	}
	return out, nil
}

func (e *benchEnv) latencyOne(ctx context.Context, srv *server, subs, rate int) (latencyResult, error) {
	r := latencyResult{Subs: subs, Rate: rate}
	cp, err := startClients(ctx, e.self, srv.URL(), e.token, subs, "bench.*")
	if err != nil {
		return r, err
	}
	defer cp.quit()
	conn, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		return r, err
	}
	defer conn.Close(ctx)
	// Warm up (prepared statement, connections' buffers), then measure.
	if _, err := pacedInserts(ctx, conn, rate, time.Second); err != nil {
		return r, err
	}
	time.Sleep(300 * time.Millisecond)
	if err := cp.reset(ctx); err != nil {
		return r, err
	}
	t0 := time.Now()
	r.Written, err = pacedInserts(ctx, conn, rate, e.cfg.LatencyTime)
	r.Seconds = time.Since(t0).Seconds()
	if err != nil {
		return r, err
	}
	r.Expected = uint64(r.Written) * uint64(subs)
	rep, err := cp.drain(ctx, r.Expected, 3*time.Second)
	if err != nil {
		return r, err
	}
	r.Lat, r.Closed = rep.Hist.Summary(), rep.Closed
	if r.Closed > 0 {
		return r, fmt.Errorf("%d subscriber connections closed: %s", rep.Closed, rep.CloseReason)
	}
	return r, nil
}

// drain polls the client process until it has counted want deliveries (or
// max elapses) and returns its report.
func (p *clientProc) drain(ctx context.Context, want uint64, max time.Duration) (clientsReport, error) {
	deadline := time.Now().Add(max)
	for {
		rep, err := p.report(ctx)
		if err != nil || rep.Hist.Count() >= want || time.Now().After(deadline) {
			return rep, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pacedInserts commits single-row transactions at rate per second for d,
// on a fixed schedule (a late insert does not shift the ones after it). It
// returns the number committed.
func pacedInserts(ctx context.Context, conn *pgx.Conn, rate int, d time.Duration) (int, error) {
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	n := 0
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * interval)
		if due.Sub(start) >= d {
			return n, nil
		}
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		}
		if _, err := conn.Exec(ctx, insertSQL, i); err != nil {
			return n, fmt.Errorf("insert: %w", err)
		}
		n++
	}
}

// settle waits until the client process has received nothing new for half
// a second (a backlog in the server has drained), or max elapses.
func (p *clientProc) settle(ctx context.Context, max time.Duration) error {
	deadline := time.Now().Add(max)
	last, still := uint64(0), 0
	for time.Now().Before(deadline) {
		rep, err := p.report(ctx)
		if err != nil {
			return err
		}
		if n := rep.Hist.Count(); n == last {
			if still++; still >= 2 {
				return nil
			}
		} else {
			last, still = n, 0
		}
		time.Sleep(250 * time.Millisecond)
	}
	return nil
}
