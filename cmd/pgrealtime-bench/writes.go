package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// The write-overhead setups, in the order they alternate.
const (
	setupNone       = "nothing attached"
	setupRecv       = "pg_recvlogical"
	setupPgrealtime = "pgrealtime"
	setupTrigger    = "trigger + pg_notify + LISTEN"
)

var writeSetups = []string{setupNone, setupRecv, setupPgrealtime, setupTrigger}

type writeSetup struct {
	Name      string    `json:"name"`
	TPS       []float64 `json:"tps"` // one per round
	Mean      float64   `json:"mean_tps"`
	Ratio     float64   `json:"ratio"`     // to nothing attached
	Delivered []int64   `json:"delivered"` // changes the consumer received, per round (-1: not counted)
	Written   []int64   `json:"written"`
	LagMB     []float64 `json:"wal_lag_mb"` // WAL not yet sent by the walsender when the writers stopped
	// CPU seconds per 100 000 rows written, per round, from
	// /proc/<pid>/stat from the writers' start until the consumer had
	// everything (or gave up): the consumer process (pg_recvlogical,
	// pgrealtime), pgrealtime's subscriber process, and the consumer's
	// Postgres backend (walsender; the LISTEN connection's backend). -1:
	// no such process.
	ConsumerCPU   []float64 `json:"consumer_cpu_per_100k"`
	SubscriberCPU []float64 `json:"subscriber_cpu_per_100k"`
	BackendCPU    []float64 `json:"backend_cpu_per_100k"`
}

// keptUp reports whether the consumer received (almost) every row in every
// round; setups without a counted consumer keep up by definition.
func (s *writeSetup) keptUp() bool { return s.minDelivered() >= 0.99 }

func (s *writeSetup) minDelivered() float64 {
	m := 1.0
	for i, d := range s.Delivered {
		if d >= 0 && s.Written[i] > 0 {
			m = min(m, float64(d)/float64(s.Written[i]))
		}
	}
	return m
}

// cpuCell describes the setup's CPU per 100 000 rows for the report.
func (s *writeSetup) cpuCell() string {
	var names [3]string
	switch s.Name {
	case setupRecv:
		names = [3]string{"pg_recvlogical", "", "walsender"}
	case setupPgrealtime:
		names = [3]string{"pgrealtime", "subscriber process", "walsender"}
	case setupTrigger:
		names = [3]string{"", "", "LISTEN backend"}
	}
	var parts []string
	for i, vals := range [3][]float64{s.ConsumerCPU, s.SubscriberCPU, s.BackendCPU} {
		sum, n := 0.0, 0
		for _, v := range vals {
			if v >= 0 {
				sum += v
				n++
			}
		}
		if n > 0 && names[i] != "" {
			parts = append(parts, fmt.Sprintf("%s %.2f", names[i], sum/float64(n)))
		}
	}
	if len(parts) == 0 {
		return "—"
	}
	return strings.Join(parts, ", ")
}

// cpuPer100k is the mean over the rounds of the consumer's whole CPU per
// 100 000 rows (its process, its subscriber process, its backend), or -1.
func (s *writeSetup) cpuPer100k() float64 {
	sum, n := 0.0, 0
	for i := range s.ConsumerCPU {
		t, ok := 0.0, false
		for _, v := range [][]float64{s.ConsumerCPU, s.SubscriberCPU, s.BackendCPU} {
			if i < len(v) && v[i] >= 0 {
				t, ok = t+v[i], true
			}
		}
		if ok {
			sum, n = sum+t, n+1
		}
	}
	if n == 0 {
		return -1
	}
	return sum / float64(n)
}

func (s *writeSetup) maxLagMB() float64 {
	m := 0.0
	for _, l := range s.LagMB {
		m = max(m, l)
	}
	return m
}

type writesResult struct {
	Writers int           `json:"writers"`
	Seconds float64       `json:"seconds"`
	Rounds  int           `json:"rounds"`
	Setups  []*writeSetup `json:"setups"`
	// ServerArgs are the flags pgrealtime ran with here beyond the ones
	// every measurement uses.
	ServerArgs []string `json:"server_args,omitempty"`
}

func (r *writesResult) setup(name string) *writeSetup {
	for _, s := range r.Setups {
		if s.Name == name {
			return s
		}
	}
	return nil
}

const triggerSQL = `
CREATE OR REPLACE FUNCTION bench_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('bench_changes', row_to_json(NEW)::text);
  RETURN NEW;
END $$;
CREATE TRIGGER bench_notify AFTER INSERT ON bench FOR EACH ROW EXECUTE FUNCTION bench_notify();`

// writes measures insert throughput of concurrent writers under each setup,
// alternating the setups round by round so that drift (caches, table size,
// other load) spreads over all of them.
func (e *benchEnv) writes(ctx context.Context) (*writesResult, error) {
	cfg := e.cfg
	r := &writesResult{Writers: cfg.Writers, Seconds: cfg.WriteTime.Seconds(), Rounds: cfg.WriteRounds, ServerArgs: e.writesServerArgs()}
	for _, name := range writeSetups {
		r.Setups = append(r.Setups, &writeSetup{Name: name})
	}
	conns := make([]*pgx.Conn, cfg.Writers)
	for i := range conns {
		c, err := pgx.Connect(ctx, e.dbURL)
		if err != nil {
			return r, err
		}
		defer c.Close(context.Background())
		conns[i] = c
	}
	for round := 1; round <= cfg.WriteRounds; round++ {
		for _, s := range r.Setups {
			wr, err := e.writeRound(ctx, conns, s.Name)
			if err != nil {
				return r, fmt.Errorf("%s, round %d: %w", s.Name, round, err)
			}
			s.TPS = append(s.TPS, wr.tps)
			s.Written = append(s.Written, wr.written)
			s.Delivered = append(s.Delivered, wr.delivered)
			s.LagMB = append(s.LagMB, wr.lagMB)
			s.ConsumerCPU = append(s.ConsumerCPU, wr.cpu[0])
			s.SubscriberCPU = append(s.SubscriberCPU, wr.cpu[1])
			s.BackendCPU = append(s.BackendCPU, wr.cpu[2])
			e.logf("   round %d, %s: %.0f tx/s (WAL lag at the end %.1f MB; consumer received %d of %d; CPU s per 100k rows: consumer %.2f, subscriber %.2f, backend %.2f)",
				round, s.Name, wr.tps, wr.lagMB, wr.delivered, wr.written, wr.cpu[0], wr.cpu[1], wr.cpu[2])
		}
	}
	none := r.setup(setupNone)
	for _, s := range r.Setups {
		for _, v := range s.TPS {
			s.Mean += v / float64(len(s.TPS))
		}
	}
	for _, s := range r.Setups {
		if none.Mean > 0 {
			s.Ratio = s.Mean / none.Mean
		}
	}
	return r, nil
}

// roundResult is one setup's measurement in one round.
type roundResult struct {
	tps                float64
	written, delivered int64 // delivered: what the consumer received (-1: not counted)
	lagMB              float64
	cpu                [3]float64 // consumer, subscriber, backend: CPU s per 100 000 rows (-1: none)
}

// writeRound attaches one setup, runs the writers for WriteTime, waits
// (bounded) until the consumer has everything, and detaches it.
func (e *benchEnv) writeRound(ctx context.Context, conns []*pgx.Conn, setup string) (res roundResult, err error) {
	// Every slot starts at the current end of WAL: no consumer drains a
	// backlog of an earlier setup.
	if err := e.exec(ctx, `SELECT pg_replication_slot_advance(slot_name, pg_current_wal_lsn()) FROM pg_replication_slots WHERE NOT active`); err != nil {
		return res, fmt.Errorf("advance slots: %w", err)
	}
	res.delivered = -1
	// The processes whose CPU is counted: consumer, subscriber, backend (0: none).
	var pids [3]int
	// drain waits until the consumer has what was written (bounded) and
	// returns what it received (-1: not counted); stop detaches the setup.
	var drain func(written int64, stopLSN string) int64
	var stop func()
	switch setup {
	case setupRecv:
		// The same work as pgrealtime's stream: pgoutput with the same
		// publications and options, every change written to a file,
		// standby status every second (pgrealtime's default).
		out := filepath.Join(e.work, "recvlogical.out")
		cmd := exec.Command(e.recvlogical,
			"-d", e.dbURL, "-S", recvSlot, "--start", "--no-loop", "-s", "1",
			"-o", "proto_version=1", "-o", "publication_names="+e.pubs, "-o", "messages=true", "-f", out)
		if err := cmd.Start(); err != nil {
			return res, err
		}
		pids[0] = cmd.Process.Pid
		stop = func() {
			cmd.Process.Signal(syscall.SIGINT)
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-done
			}
			os.Remove(out)
		}
		if pids[2], err = e.walsender(ctx, recvSlot); err != nil {
			stop()
			return res, err
		}
		drain = func(_ int64, stopLSN string) int64 {
			e.waitSent(ctx, pids[2], stopLSN, 5*time.Second)
			return -1
		}
	case setupPgrealtime:
		srv, err := e.startLive(ctx, e.writesServerArgs()...)
		if err != nil {
			return res, err
		}
		cp, err := startClients(ctx, e.self, srv.URL(), e.token, 1, "bench.*")
		if err != nil {
			srv.stop()
			return res, err
		}
		pids[0], pids[1] = srv.Pid(), cp.Pid()
		stop = func() {
			cp.quit()
			if err := srv.stop(); err != nil {
				e.logf("   stopping pgrealtime: %v", err)
			}
		}
		if pids[2], err = e.walsender(ctx, slotName); err != nil {
			stop()
			return res, err
		}
		cp.reset(ctx)
		drain = func(written int64, _ string) int64 {
			rep, _ := cp.drain(ctx, uint64(written), 5*time.Second)
			if rep.Closed > 0 {
				e.logf("   the pgrealtime subscriber was closed: %s", rep.CloseReason)
			}
			return int64(rep.Hist.Count())
		}
	case setupTrigger:
		if err := e.exec(ctx, triggerSQL); err != nil {
			return res, err
		}
		lconn, err := pgx.Connect(ctx, e.dbURL)
		if err != nil {
			return res, err
		}
		if _, err := lconn.Exec(ctx, "LISTEN bench_changes"); err != nil {
			lconn.Close(ctx)
			return res, err
		}
		pids[2] = int(lconn.PgConn().PID())
		var got atomic.Int64
		lctx, lcancel := context.WithCancel(ctx)
		ldone := make(chan struct{})
		go func() {
			defer close(ldone)
			for {
				if _, err := lconn.WaitForNotification(lctx); err != nil {
					return
				}
				got.Add(1)
			}
		}()
		drain = func(written int64, _ string) int64 {
			deadline := time.Now().Add(5 * time.Second)
			for got.Load() < written && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			return got.Load()
		}
		stop = func() {
			lcancel()
			<-ldone
			lconn.Close(context.Background())
			if err := e.exec(context.Background(), "DROP TRIGGER bench_notify ON bench"); err != nil {
				e.logf("   drop trigger: %v", err)
			}
		}
	}
	time.Sleep(500 * time.Millisecond)

	// Writers stop at the deadline between statements: cancelling a
	// statement would close its connection.
	var n atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(conns))
	cpu0 := cpuOf(pids)
	t0 := time.Now()
	end := t0.Add(e.cfg.WriteTime)
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; time.Now().Before(end); j++ {
				if _, err := c.Exec(ctx, insertSQL, i*1_000_000+j); err != nil {
					errs <- err
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	res.written = n.Load()
	var lag int64
	var stopLSN string
	if err := e.queryRow(ctx, `SELECT pg_current_wal_lsn()::text, coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), sent_lsn)), 0)::bigint FROM pg_stat_replication`, &stopLSN, &lag); err != nil {
		e.logf("   replication lag: %v", err)
	}
	res.lagMB = float64(lag) / 1e6
	if drain != nil {
		res.delivered = drain(res.written, stopLSN)
	}
	cpu1 := cpuOf(pids)
	for i := range res.cpu {
		res.cpu[i] = -1
		if pids[i] != 0 && cpu0[i] >= 0 && cpu1[i] >= 0 && res.written > 0 {
			res.cpu[i] = (cpu1[i] - cpu0[i]).Seconds() / float64(res.written) * 1e5
		}
	}
	if stop != nil {
		stop()
	}
	select {
	case err := <-errs:
		return res, err
	default:
	}
	res.tps = float64(res.written) / elapsed.Seconds()
	return res, nil
}

// writesSendQueue is the send queue of the write-overhead measurement's
// pgrealtime. With the default (1 024 events, 50 ms at 20 000 rows/s) the
// one subscriber was closed with 4008 in almost every round: with eight
// writers, the walsender, pgrealtime and the subscriber process on 2 cores,
// a process waits for a CPU longer than that. A closed subscriber stops
// pgrealtime's socket writes, which leaves the writers more CPU and so
// flatters pgrealtime's ratio; with a queue that holds a round's rows the
// whole cost is counted, and the report shows how far behind the
// subscriber was (rows received 5 s after the writers stopped).
const writesSendQueue = 65536

// writesServerArgs are the extra pgrealtime flags of the write-overhead
// measurement (the report states them).
func (e *benchEnv) writesServerArgs() []string {
	return []string{"--send-queue", fmt.Sprint(writesSendQueue)}
}

// cpuOf samples the CPU time of each pid (0: none, -1: unreadable).
func cpuOf(pids [3]int) [3]time.Duration {
	var out [3]time.Duration
	for i, pid := range pids {
		if pid == 0 {
			continue
		}
		d, err := cpuTime(pid)
		if err != nil {
			d = -1
		}
		out[i] = d
	}
	return out
}

// walsender waits until a consumer streams from slot and returns the pid of
// its walsender.
func (e *benchEnv) walsender(ctx context.Context, slot string) (int, error) {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var pid *int32
		if err := e.queryRow(ctx, `SELECT active_pid FROM pg_replication_slots WHERE slot_name = '`+slot+`'`, &pid); err == nil && pid != nil {
			return int(*pid), nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("slot %s not active after 15 s", slot)
}

// waitSent waits (at most max) until the walsender pid has sent WAL up to
// lsn.
func (e *benchEnv) waitSent(ctx context.Context, pid int, lsn string, max time.Duration) {
	if lsn == "" {
		return
	}
	deadline := time.Now().Add(max)
	for time.Now().Before(deadline) {
		var done bool
		err := e.queryRow(ctx, fmt.Sprintf(`SELECT coalesce((SELECT sent_lsn >= '%s'::pg_lsn FROM pg_stat_replication WHERE pid = %d), true)`, lsn, pid), &done)
		if err != nil || done {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
