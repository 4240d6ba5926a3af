package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The cluster measurements (PROTOCOL section 8): two pgrealtime nodes on
// the benchmark's Postgres and one Redis, started by the benchmark like the
// single node, compared with the single-node rows of the same run.

const (
	clusterNodes = 2
	clusterSlot  = "pgrealtime_cluster" // its own slot: the single node's stays as it was
	// failoverRate is the writer's rate, rows/s, while the leader is killed.
	failoverRate = 500
	// failoverBound is PROTOCOL 8's takeover bound after a SIGKILL.
	failoverBound = 10 * time.Second
)

type clusterResult struct {
	Nodes       int    `json:"nodes"`
	RedisFsync  string `json:"redis_appendfsync"`
	Latency     *latencyResult
	LatencyErr  string
	Catchup     *catchupRun
	CatchupRows int
	CatchupErr  string
	Failover    *failoverResult
	FailoverErr string
}

func (c *clusterResult) errors() []string {
	var out []string
	for _, e := range []struct{ name, err string }{
		{"cluster live latency", c.LatencyErr}, {"cluster catch-up", c.CatchupErr}, {"cluster failover", c.FailoverErr},
	} {
		if e.err != "" {
			out = append(out, e.name+": "+e.err)
		}
	}
	return out
}

// benchCluster is the running nodes and their Redis.
type benchCluster struct {
	e     *benchEnv
	redis *redisServer
	flags []string // every node's cluster flags but --node-id
	nodes []*server
}

func (c *benchCluster) id(i int) string { return "bench-node" + strconv.Itoa(i+1) }

// start launches every node at once and waits until each is ready.
func (c *benchCluster) start(ctx context.Context) error {
	c.nodes = make([]*server, clusterNodes)
	for i := range c.nodes {
		s, err := startServer(c.e.srv, append([]string{"--node-id", c.id(i)}, c.flags...)...)
		if err != nil {
			c.stop()
			return err
		}
		c.nodes[i] = s
	}
	for i, s := range c.nodes {
		if err := s.waitReady(ctx, 60*time.Second); err != nil {
			c.stop()
			if msg := err.Error(); strings.Contains(msg, "not wired yet") || strings.Contains(msg, "--redis-url: unknown flag") || strings.Contains(msg, "--node-id: unknown flag") {
				return fmt.Errorf("this pgrealtime binary has no cluster mode (PROTOCOL section 8: --redis-url, --node-id) yet: %s: %w", c.id(i), err)
			}
			return fmt.Errorf("%s: %w", c.id(i), err)
		}
	}
	return nil
}

// stop ends every node (SIGTERM).
func (c *benchCluster) stop() {
	for _, s := range c.nodes {
		if s != nil {
			_ = s.stop()
		}
	}
}

// leader waits until exactly one running node's /readyz says it leads.
func (c *benchCluster) leader(ctx context.Context, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		leaders := 0
		at := -1
		last = ""
		for i, s := range c.nodes {
			if s == nil || s.exited() {
				continue
			}
			role, err := readyRole(ctx, s)
			last += fmt.Sprintf(" %s: %s %v;", c.id(i), role, err)
			if role == "leader" {
				leaders++
				at = i
			}
		}
		if leaders == 1 {
			return at, nil
		}
		if leaders > 1 {
			return -1, fmt.Errorf("two nodes say they lead:%s", last)
		}
		if time.Now().After(deadline) {
			return -1, fmt.Errorf("no leader within %s:%s", timeout, last)
		}
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// readyRole is the role /readyz of s names (PROTOCOL 8), "" when not ready.
func readyRole(ctx context.Context, s *server) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.Addr+"/readyz", nil)
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	var r struct {
		Ready bool   `json:"ready"`
		Role  string `json:"role"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return "", fmt.Errorf("/readyz answered %d %q: %v", resp.StatusCode, b, err)
	}
	if resp.StatusCode != http.StatusOK || !r.Ready {
		return "", fmt.Errorf("/readyz answered %d %s", resp.StatusCode, b)
	}
	return r.Role, nil
}

// clusterMode runs the three cluster measurements. An error means the cluster
// could not be set up at all; each measurement's own failure is kept in
// the result.
func (e *benchEnv) clusterMode(ctx context.Context) (*clusterResult, error) {
	r := &clusterResult{Nodes: clusterNodes, RedisFsync: redisAppendFsync, CatchupRows: e.cfg.CatchupRows}
	redis, err := startRedis(e.work)
	if err != nil {
		return r, err
	}
	defer redis.stop()
	history := max(10000, e.cfg.CatchupRows+e.cfg.CatchupRows/10)
	c := &benchCluster{e: e, redis: redis, flags: []string{"--redis-url", redis.URL(), "--slot", clusterSlot, "--history-size", strconv.Itoa(history)}}
	if err := c.start(ctx); err != nil {
		return r, fmt.Errorf("start %d nodes: %w", clusterNodes, err)
	}
	defer c.stop()
	lead, err := c.leader(ctx, 20*time.Second)
	if err != nil {
		return r, err
	}
	fol := c.nodes[1-lead]
	if _, err := e.markerPosition(ctx, fol); err != nil {
		return r, fmt.Errorf("wait for the stream to reach the follower: %w", err)
	}

	e.logf("   live latency through 2 nodes + Redis (subscriber on the follower)")
	lat, err := e.latencyOne(ctx, fol, e.cfg.LatencySubs[0], e.cfg.LatencyRate)
	r.Latency, r.LatencyErr = &lat, errString(err)
	if err == nil {
		e.logf("   %d rows/s to %d subscriber(s) on the follower: p50 %.2f ms, p99 %.2f ms, max %.2f ms", lat.Rate, lat.Subs, lat.Lat.P50, lat.Lat.P99, lat.Lat.Max)
	}

	e.logf("   catch-up of %d rows through Redis", e.cfg.CatchupRows)
	r.Catchup, err = e.clusterCatchup(ctx, c)
	r.CatchupErr = errString(err)

	e.logf("   failover: SIGKILL of the leader at %d rows/s", failoverRate)
	r.Failover, err = e.failover(ctx, c)
	r.FailoverErr = errString(err)
	return r, nil
}

// clusterCatchup stops the nodes, commits the backlog, starts them again
// at once and times, from their start, a subscriber on the follower that
// resumes from before the backlog and receives every row through Redis.
func (e *benchEnv) clusterCatchup(ctx context.Context, c *benchCluster) (*catchupRun, error) {
	lead, err := c.leader(ctx, 20*time.Second)
	if err != nil {
		return nil, err
	}
	since, err := e.markerPosition(ctx, c.nodes[1-lead])
	if err != nil {
		return nil, err
	}
	c.stop()
	var backlog catchupResult
	_, lastID, err := e.writeBacklog(ctx, &backlog)
	if err != nil {
		return nil, err
	}
	if err := e.waitFlushed(ctx); err != nil {
		return nil, err
	}
	run := &catchupRun{Label: "2 nodes + Redis", Flags: c.flags}
	redis0, _ := cpuTime(c.redis.cmd.Process.Pid)
	c0 := readCPU()
	start := time.Now()
	if err := c.start(ctx); err != nil {
		return nil, err
	}
	if lead, err = c.leader(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	deadline := 5 * time.Minute
	if e.cfg.Quick {
		deadline = time.Minute
	}
	cctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	fol := c.nodes[1-lead]
	appended := e.watchAppended(cctx, c.nodes[lead], start)
	done, err := e.catchupSubscriber(cctx, fol, run, since, lastID)
	if err != nil {
		return run, fmt.Errorf("subscriber on the follower: %w: %s", err, fol.logTail())
	}
	run.Seconds = done.Sub(start).Seconds()
	run.Rate = float64(e.cfg.CatchupRows) / run.Seconds
	run.MachineCPU = machineCPU(c0)
	for _, s := range []*server{c.nodes[lead], fol} {
		cpu, _ := cpuTime(s.Pid())
		run.NodeCPU = append(run.NodeCPU, cpu.Seconds())
	}
	if redis1, err := cpuTime(c.redis.cmd.Process.Pid); err == nil {
		run.RedisCPU = (redis1 - redis0).Seconds()
	}
	cancel()
	if a := <-appended; a.all > 0 {
		run.FirstSeconds, run.ServerSeconds = a.first.Seconds(), a.all.Seconds()
	}
	e.logf("   2 nodes + Redis: %.2f s from the nodes' start to the last row at the follower's subscriber, %.0f rows/s; the leader appended the first rows to Redis at %.2f s, all at %.2f s; CPU: leader %.2f s, follower %.2f s, Redis %.2f s, machine %.2f s",
		run.Seconds, run.Rate, run.FirstSeconds, run.ServerSeconds, run.NodeCPU[0], run.NodeCPU[1], run.RedisCPU, run.MachineCPU)
	return run, nil
}

// appendTimes is when, after the nodes' start, the leader had appended its
// first and all catch-up rows to Redis (0: not seen).
type appendTimes struct{ first, all time.Duration }

// watchAppended polls the leader's pgrealtime_redis_appended_events_total
// (every 20 ms, as the single node's count of WAL events) until it reaches
// the backlog or ctx ends; the channel gets the times then.
func (e *benchEnv) watchAppended(ctx context.Context, lead *server, start time.Time) <-chan appendTimes {
	out := make(chan appendTimes, 1)
	go func() {
		var t appendTimes
		defer func() { out <- t }()
		for ctx.Err() == nil && !lead.exited() {
			n, ok := lead.metric(ctx, `pgrealtime_redis_appended_events_total`)
			if ok && n > 0 && t.first == 0 {
				t.first = time.Since(start)
			}
			if ok && n >= float64(e.cfg.CatchupRows) {
				t.all = time.Since(start)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return out
}
