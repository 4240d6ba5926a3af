package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

type fanoutStep struct {
	Rate      int     `json:"events_per_s"` // target
	Written   int     `json:"written"`
	Seconds   float64 `json:"seconds"`
	Delivered uint64  `json:"delivered_in_window"`
	PerSec    float64 `json:"delivered_per_s"`
	Lat       Latency `json:"latency"`
	ServerCPU float64 `json:"server_cpu_s"`
	ClientCPU float64 `json:"clients_cpu_s"`
	Closed    int64   `json:"closed"`
}

type fanoutResult struct {
	Subs           int          `json:"subscribers"`
	ConnectSeconds float64      `json:"connect_seconds"`
	Steps          []fanoutStep `json:"steps"`
	StopReason     string       `json:"stop_reason"`
}

// fanout holds FanoutSubs subscribers of one topic in a client process and
// steps the event rate up until p99 passes FanoutP99 (or subscribers are
// dropped as slow consumers, or the steps run out).
func (e *benchEnv) fanout(ctx context.Context, srv *server) (*fanoutResult, error) {
	r := &fanoutResult{Subs: e.cfg.FanoutSubs}
	t0 := time.Now()
	cp, err := startClients(ctx, e.self, srv.URL(), e.token, e.cfg.FanoutSubs, "bench.*")
	if err != nil {
		return r, err
	}
	defer cp.quit()
	r.ConnectSeconds = time.Since(t0).Seconds()
	e.logf("   %d subscribers connected in %.1f s", e.cfg.FanoutSubs, r.ConnectSeconds)
	conn, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		return r, err
	}
	defer conn.Close(ctx)
	if _, err := pacedInserts(ctx, conn, e.cfg.FanoutRates[0], time.Second); err != nil {
		return r, err
	}
	time.Sleep(500 * time.Millisecond)
	for _, rate := range e.cfg.FanoutRates {
		st := fanoutStep{Rate: rate}
		if err := cp.reset(ctx); err != nil {
			return r, err
		}
		s0, _ := cpuTime(srv.Pid())
		c0, _ := cpuTime(cp.Pid())
		t0 := time.Now()
		st.Written, err = pacedInserts(ctx, conn, rate, e.cfg.FanoutStep)
		st.Seconds = time.Since(t0).Seconds()
		if err != nil {
			return r, err
		}
		rep, err := cp.report(ctx)
		if err != nil {
			return r, err
		}
		st.Delivered = rep.Hist.Count()
		st.PerSec = float64(st.Delivered) / st.Seconds
		want := uint64(st.Written) * uint64(r.Subs)
		if rep, err = cp.drain(ctx, want, 5*time.Second); err != nil {
			return r, err
		}
		s1, _ := cpuTime(srv.Pid())
		c1, _ := cpuTime(cp.Pid())
		st.ServerCPU, st.ClientCPU = (s1 - s0).Seconds(), (c1 - c0).Seconds()
		st.Lat, st.Closed = rep.Hist.Summary(), rep.Closed
		r.Steps = append(r.Steps, st)
		e.logf("   %d events/s: %.0f deliveries/s, p50 %.1f ms, p99 %.1f ms, max %.1f ms; CPU server %.1f s, clients %.1f s; closed %d",
			rate, st.PerSec, st.Lat.P50, st.Lat.P99, st.Lat.Max, st.ServerCPU, st.ClientCPU, st.Closed)
		switch {
		case st.Closed > 0:
			r.StopReason = fmt.Sprintf("%d subscribers closed at %d events/s (%s)", st.Closed, rate, rep.CloseReason)
		case st.Lat.P99 > e.cfg.FanoutP99:
			r.StopReason = fmt.Sprintf("p99 %.0f ms > %.0f ms at %d events/s", st.Lat.P99, e.cfg.FanoutP99, rate)
		case float64(st.Written) < 0.9*float64(rate)*e.cfg.FanoutStep.Seconds():
			r.StopReason = fmt.Sprintf("the writer managed only %d of %d events/s", int(float64(st.Written)/st.Seconds), rate)
		}
		if r.StopReason != "" {
			return r, nil
		}
		time.Sleep(300 * time.Millisecond)
	}
	r.StopReason = fmt.Sprintf("last step (%d events/s) still within p99 %.0f ms", e.cfg.FanoutRates[len(e.cfg.FanoutRates)-1], e.cfg.FanoutP99)
	return r, nil
}
