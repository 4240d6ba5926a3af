package main

import "fmt"

// Targets of the cluster rows (issue 11): what the Redis hop may add to the
// single node's live latency, and the catch-up ratio to the single node.
const (
	clusterP50Extra     = 1.0 // ms
	clusterP99Extra     = 5.0 // ms
	clusterCatchupRatio = 0.8
)

// singleLatency is the single-node latency row of this run with the same
// subscribers and rate as l, if it was measured.
func (r *results) singleLatency(l *latencyResult) (latencyResult, int, bool) {
	for i, s := range r.Latency {
		if l != nil && s.Subs == l.Subs && s.Rate == l.Rate {
			return s, i, true
		}
	}
	return latencyResult{}, 0, false
}

// singleCatchup is the single node's default catch-up run of this run, if
// its subscriber received every row.
func (r *results) singleCatchup() (catchupRun, bool) {
	if r.Catchup == nil || len(r.Catchup.Runs) == 0 || r.Catchup.Runs[0].SubscriberErr != "" {
		return catchupRun{}, false
	}
	return r.Catchup.Runs[0], true
}

// clusterRows writes the summary rows 6a–6c: only what was measured, with
// the single node's figures of the same run beside them when there are any.
func (r *results) clusterRows(w func(string, ...any)) {
	c := r.Cluster
	if c == nil || r.ClusterErr != "" {
		w("| 6a | cluster: live latency | %s | | +%.0f ms p50, +%.0f ms p99 over the single node | |\n", failed(r.ClusterErr), clusterP50Extra, clusterP99Extra)
		w("| 6b | cluster: catch-up | — | | ≥ %.1f× the single node | |\n| 6c | cluster: failover | — | | ≤ %.0f s, 0 lost, 0 duplicated | |\n", clusterCatchupRatio, failoverBound.Seconds())
		return
	}
	setup := fmt.Sprintf("%d nodes + Redis (AOF, appendfsync %s)", c.Nodes, c.RedisFsync)
	// 6a
	if l := c.Latency; c.LatencyErr == "" && l != nil {
		ref, res := "single node: not measured in this run", "no comparison"
		if s, i, ok := r.singleLatency(l); ok {
			d50, d99 := l.Lat.P50-s.Lat.P50, l.Lat.P99-s.Lat.P99
			ref = fmt.Sprintf("single node (2%c): p50 %s · p99 %s", 'a'+i, ms(s.Lat.P50), ms(s.Lat.P99))
			res = fmt.Sprintf("%+.2f ms p50, %+.2f ms p99: %s", d50, d99, r.verdict(d50 <= clusterP50Extra && d99 <= clusterP99Extra))
		}
		w("| 6a | cluster: live latency, %s rows/s to %s subscriber(s) on the follower of %s, commit → client | p50 %s · p99 %s · max %s | %s | +%.0f ms p50, +%.0f ms p99 over the single node | %s |\n",
			thousands(float64(l.Rate)), thousands(float64(l.Subs)), setup, ms(l.Lat.P50), ms(l.Lat.P99), ms(l.Lat.Max), ref, clusterP50Extra, clusterP99Extra, res)
	} else {
		w("| 6a | cluster: live latency | %s | | +%.0f ms p50, +%.0f ms p99 over the single node | |\n", failed(c.LatencyErr), clusterP50Extra, clusterP99Extra)
	}
	// 6b
	if cu := c.Catchup; c.CatchupErr == "" && cu != nil {
		ref, res := "single node: not measured in this run", "no comparison"
		if s, ok := r.singleCatchup(); ok {
			ratio := cu.Rate / s.Rate
			ref = fmt.Sprintf("single node (1): %s rows/s (%.2f s)", thousands(s.Rate), s.Seconds)
			res = fmt.Sprintf("%.2f×: %s", ratio, r.verdict(ratio >= clusterCatchupRatio))
		}
		w("| 6b | cluster: catch-up of %s rows committed while both nodes were stopped, through Redis to a subscriber on the follower resuming with since | %s rows/s (%.2f s from the nodes' start to the last row) | %s | ≥ %.1f× the single node | %s |\n",
			thousands(float64(c.CatchupRows)), thousands(cu.Rate), cu.Seconds, ref, clusterCatchupRatio, res)
	} else {
		w("| 6b | cluster: catch-up | %s | | ≥ %.1f× the single node | |\n", failed(c.CatchupErr), clusterCatchupRatio)
	}
	// 6c
	if f := c.Failover; c.FailoverErr == "" && f != nil {
		ok := f.FirstAfter <= failoverBound.Seconds() && f.Lost == 0 && f.Duplicated == 0
		w("| 6c | cluster: failover, SIGKILL of the leader while %s rows/s are written; subscriber on the follower | first row written after the kill delivered %s after it; %s rows: %d lost, %d duplicated | | ≤ %.0f s, 0 lost, 0 duplicated | %s |\n",
			thousands(float64(f.Rate)), seconds(f.FirstAfter), thousands(float64(f.Written)), f.Lost, f.Duplicated, failoverBound.Seconds(), r.verdict(ok))
	} else {
		w("| 6c | cluster: failover | %s | | ≤ %.0f s, 0 lost, 0 duplicated | |\n", failed(c.FailoverErr), failoverBound.Seconds())
	}
}

// clusterDetails describes how the cluster rows were measured.
func (r *results) clusterDetails(w func(string, ...any)) {
	c := r.Cluster
	if c == nil || r.ClusterErr != "" || (c.Latency == nil && c.Catchup == nil && c.Failover == nil) {
		return
	}
	w("\n## 6. Cluster (PROTOCOL section 8)\n\n")
	w("%d pgrealtime nodes (`--redis-url`, `--node-id`, their own slot `%s`, `--history-size` above the backlog) on the same Postgres and one redis-server started by the benchmark (`--appendonly yes --appendfsync %s`, no RDB snapshots), all on this machine. ", c.Nodes, clusterSlot, c.RedisFsync)
	w("The leader is found from `/readyz` (`role`); every subscriber is on the other node, the follower, so that every event it gets came through Redis. ")
	w("Live latency is measured as in section 2 (same writer, same client process). Catch-up stops both nodes, commits the backlog, starts both at once and times from their start to the last row at a subscriber on the follower that resumes from a position before the backlog (as in section 1). ")
	w("Failover: a writer commits single-row transactions with v = 1, 2, … at %d rows/s; after a second of rows reached the follower's subscriber the leader gets SIGKILL; the time runs from the kill to the subscriber's receipt of the first row whose insert began after it; the writer goes on for another second of rows after that, then every row 1…n must arrive exactly once (lost = never received, duplicated = received more than once; the subscriber reconnects with since if its socket drops).\n", failoverRate)
	if cu := c.Catchup; cu != nil && c.CatchupErr == "" && len(cu.NodeCPU) == 2 {
		w("\nCatch-up run: the leader had appended the first rows to Redis %.2f s after the nodes' start and all of them at %.2f s (its `pgrealtime_redis_appended_events_total`, polled every 20 ms); the follower's subscriber had the last row at %.2f s. CPU over the catch-up: leader %.2f s, follower %.2f s, Redis %.2f s; the whole machine (every process, Postgres and the subscriber included) %.2f s busy.",
			cu.FirstSeconds, cu.ServerSeconds, cu.Seconds, cu.NodeCPU[0], cu.NodeCPU[1], cu.RedisCPU, cu.MachineCPU)
		if s, ok := r.singleCatchup(); ok && s.MachineCPU > 0 {
			w(" The single node (row 1): pgrealtime %.2f s, the whole machine %.2f s.", s.ServerCPU, s.MachineCPU)
		}
		w("\n")
	}
	if f := c.Failover; f != nil && f.Written > 0 {
		w("\nFailover run: killed %s; %s rows written, %s received, the subscriber reconnected %d time(s).\n", f.Killed, thousands(float64(f.Written)), thousands(float64(f.Received)), f.Reconnects)
	}
}

// seconds formats a duration given in seconds: milliseconds below one.
func seconds(s float64) string {
	if s < 1 {
		return ms(s * 1000)
	}
	return fmt.Sprintf("%.2f s", s)
}
