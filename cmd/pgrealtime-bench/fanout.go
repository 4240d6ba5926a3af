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
	ServerSys float64 `json:"server_sys_s"` // of which in the kernel
	ClientCPU float64 `json:"clients_cpu_s"`
	Closed    int64   `json:"closed"`
}

type fanoutResult struct {
	Subs           int          `json:"subscribers"`
	ConnectSeconds float64      `json:"connect_seconds"`
	Steps          []fanoutStep `json:"steps"`
	StopReason     string       `json:"stop_reason"`
	// Floor: the same steps against `pgrealtime-bench floor` (one write(2)
	// of a prebuilt frame per delivery, nothing else): what this machine
	// allows.
	Floor     []fanoutStep `json:"floor_steps"`
	FloorErr  string       `json:"floor_error,omitempty"`
	FloorStop string       `json:"floor_stop_reason"`
}

// fanout holds FanoutSubs subscribers of one topic in a client process and
// steps the event rate up until p99 passes FanoutP99 (or subscribers are
// dropped as slow consumers, or the steps run out); then the same against
// the floor server.
func (e *benchEnv) fanout(ctx context.Context, srv *server) (*fanoutResult, error) {
	r, err := e.fanoutPgrealtime(ctx, srv)
	if err != nil {
		return r, err
	}
	e.logf("   the floor: %d subscribers of a bare WebSocket server writing each event with one write(2) per subscriber", e.cfg.FanoutSubs)
	if err := e.fanoutFloor(ctx, r); err != nil {
		r.FloorErr = err.Error()
		e.logf("   floor failed: %v", err)
	}
	return r, nil
}

func (e *benchEnv) fanoutFloor(ctx context.Context, r *fanoutResult) error {
	fp, err := startFloor(ctx, e.self)
	if err != nil {
		return err
	}
	defer fp.quit()
	cp, err := startClients(ctx, e.self, fp.URL(), "", e.cfg.FanoutSubs, "bench.*")
	if err != nil {
		return err
	}
	defer cp.quit()
	produce := func(rate int, d time.Duration) (int, error) { return fp.publish(ctx, rate, d) }
	r.Floor, r.FloorStop, err = e.fanoutSteps(ctx, cp, fp.Pid(), e.cfg.FanoutSubs, produce)
	return err
}

func (e *benchEnv) fanoutPgrealtime(ctx context.Context, srv *server) (*fanoutResult, error) {
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
	produce := func(rate int, d time.Duration) (int, error) { return pacedInserts(ctx, conn, rate, d) }
	r.Steps, r.StopReason, err = e.fanoutSteps(ctx, cp, srv.Pid(), r.Subs, produce)
	return r, err
}

// fanoutSteps steps the rate up (or, when the first rate misses, down) with
// subs subscribers in cp, produce making the events, pid being the server.
func (e *benchEnv) fanoutSteps(ctx context.Context, cp *clientProc, pid, subs int, produce func(rate int, d time.Duration) (int, error)) ([]fanoutStep, string, error) {
	var steps []fanoutStep
	// step runs one rate and says why stepping up must stop ("" to go on).
	step := func(rate int) (fanoutStep, string, error) {
		st := fanoutStep{Rate: rate}
		if err := cp.reset(ctx); err != nil {
			return st, "", err
		}
		s0u, s0s, _ := cpuTimes(pid)
		c0, _ := cpuTime(cp.Pid())
		t0 := time.Now()
		var err error
		st.Written, err = produce(rate, e.cfg.FanoutStep)
		st.Seconds = time.Since(t0).Seconds()
		if err != nil {
			return st, "", err
		}
		rep, err := cp.report(ctx)
		if err != nil {
			return st, "", err
		}
		st.Delivered = rep.Hist.Count()
		st.PerSec = float64(st.Delivered) / st.Seconds
		want := uint64(st.Written) * uint64(subs)
		if rep, err = cp.drain(ctx, want, 5*time.Second); err != nil {
			return st, "", err
		}
		s1u, s1s, _ := cpuTimes(pid)
		c1, _ := cpuTime(cp.Pid())
		st.ServerCPU, st.ClientCPU = (s1u + s1s - s0u - s0s).Seconds(), (c1 - c0).Seconds()
		st.ServerSys = (s1s - s0s).Seconds()
		st.Lat, st.Closed = rep.Hist.Summary(), rep.Closed
		e.logf("   %d events/s: %.0f deliveries/s, p50 %.1f ms, p99 %.1f ms, max %.1f ms; CPU server %.1f s, clients %.1f s; closed %d",
			rate, st.PerSec, st.Lat.P50, st.Lat.P99, st.Lat.Max, st.ServerCPU, st.ClientCPU, st.Closed)
		// Let a backlog drain before the next step.
		if err := cp.settle(ctx, 20*time.Second); err != nil {
			return st, "", err
		}
		switch {
		case st.Closed > 0:
			return st, fmt.Sprintf("%d subscribers closed at %d events/s (%s)", st.Closed, rate, rep.CloseReason), nil
		case st.Lat.P99 > e.cfg.FanoutP99:
			return st, fmt.Sprintf("p99 %.0f ms > %.0f ms at %d events/s", st.Lat.P99, e.cfg.FanoutP99, rate), nil
		case float64(st.Written) < 0.9*float64(rate)*e.cfg.FanoutStep.Seconds():
			return st, fmt.Sprintf("the writer managed only %d of %d events/s", int(float64(st.Written)/st.Seconds), rate), nil
		}
		return st, "", nil
	}
	for i, rate := range e.cfg.FanoutRates {
		st, stop, err := step(rate)
		if err != nil {
			return steps, "", err
		}
		steps = append(steps, st)
		if stop == "" {
			continue
		}
		if i > 0 || st.Closed > 0 {
			return steps, stop, nil
		}
		// The first step failed: step down to find what does hold.
		for _, lower := range []int{rate / 2, rate / 5, rate / 10} {
			if lower < 1 {
				break
			}
			st, stop2, err := step(lower)
			if err != nil {
				return steps, "", err
			}
			steps = append(steps, st)
			if stop2 == "" || st.Closed > 0 {
				break
			}
		}
		return steps, stop + "; then stepped down", nil
	}
	return steps, fmt.Sprintf("last step (%d events/s) still within p99 %.0f ms", e.cfg.FanoutRates[len(e.cfg.FanoutRates)-1], e.cfg.FanoutP99), nil
}
