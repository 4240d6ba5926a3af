package main

import (
	"context"
	"fmt"
	"os/exec"
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
	r := &writesResult{Writers: cfg.Writers, Seconds: cfg.WriteTime.Seconds(), Rounds: cfg.WriteRounds}
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
			tps, written, delivered, lag, err := e.writeRound(ctx, conns, s.Name)
			if err != nil {
				return r, fmt.Errorf("%s, round %d: %w", s.Name, round, err)
			}
			s.TPS = append(s.TPS, tps)
			s.Written = append(s.Written, written)
			s.Delivered = append(s.Delivered, delivered)
			s.LagMB = append(s.LagMB, lag)
			e.logf("   round %d, %s: %.0f tx/s (WAL lag at the end %.1f MB; consumer received %d of %d)", round, s.Name, tps, lag, delivered, written)
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

// writeRound attaches one setup, runs the writers for WriteTime and detaches
// it. delivered is what the setup's consumer received of the written rows
// (-1 when there is no consumer to count).
func (e *benchEnv) writeRound(ctx context.Context, conns []*pgx.Conn, setup string) (tps float64, written, delivered int64, lagMB float64, err error) {
	// Every slot starts at the current end of WAL: no consumer drains a
	// backlog of an earlier setup.
	if err := e.exec(ctx, `SELECT pg_replication_slot_advance(slot_name, pg_current_wal_lsn()) FROM pg_replication_slots WHERE NOT active`); err != nil {
		return 0, 0, 0, 0, fmt.Errorf("advance slots: %w", err)
	}
	delivered = -1
	var detach func() int64
	switch setup {
	case setupRecv:
		cmd := exec.Command(e.recvlogical,
			"-d", e.dbURL, "-S", recvSlot, "--start", "--no-loop",
			"-o", "proto_version=1", "-o", "publication_names="+e.pubs, "-f", "/dev/null")
		if err := cmd.Start(); err != nil {
			return 0, 0, 0, 0, err
		}
		detach = func() int64 {
			cmd.Process.Signal(syscall.SIGINT)
			done := make(chan struct{})
			go func() { cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-done
			}
			return -1
		}
		if err := e.waitSlotActive(ctx, recvSlot); err != nil {
			detach()
			return 0, 0, 0, 0, err
		}
	case setupPgrealtime:
		srv, err := e.startLive(ctx)
		if err != nil {
			return 0, 0, 0, 0, err
		}
		cp, err := startClients(ctx, e.self, srv.URL(), e.token, 1, "bench.*")
		if err != nil {
			srv.stop()
			return 0, 0, 0, 0, err
		}
		cp.reset(ctx)
		detach = func() int64 {
			rep, _ := cp.drain(ctx, uint64(written), 5*time.Second)
			if rep.Closed > 0 {
				e.logf("   the pgrealtime subscriber was closed: %s", rep.CloseReason)
			}
			cp.quit()
			if err := srv.stop(); err != nil {
				e.logf("   stopping pgrealtime: %v", err)
			}
			return int64(rep.Hist.Count())
		}
	case setupTrigger:
		if err := e.exec(ctx, triggerSQL); err != nil {
			return 0, 0, 0, 0, err
		}
		lconn, err := pgx.Connect(ctx, e.dbURL)
		if err != nil {
			return 0, 0, 0, 0, err
		}
		if _, err := lconn.Exec(ctx, "LISTEN bench_changes"); err != nil {
			lconn.Close(ctx)
			return 0, 0, 0, 0, err
		}
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
		detach = func() int64 {
			deadline := time.Now().Add(5 * time.Second)
			for got.Load() < written && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			lcancel()
			<-ldone
			lconn.Close(context.Background())
			if err := e.exec(context.Background(), "DROP TRIGGER bench_notify ON bench"); err != nil {
				e.logf("   drop trigger: %v", err)
			}
			return got.Load()
		}
	}
	time.Sleep(500 * time.Millisecond)

	// Writers stop at the deadline between statements: cancelling a
	// statement would close its connection.
	var n atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, len(conns))
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
	written = n.Load()
	var lag int64
	if err := e.queryRow(ctx, `SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), sent_lsn)), 0)::bigint FROM pg_stat_replication`, &lag); err != nil {
		e.logf("   replication lag: %v", err)
	}
	lagMB = float64(lag) / 1e6
	if detach != nil {
		delivered = detach()
	}
	select {
	case err := <-errs:
		return 0, written, delivered, lagMB, err
	default:
	}
	return float64(written) / elapsed.Seconds(), written, delivered, lagMB, nil
}

// waitSlotActive waits until a consumer streams from slot.
func (e *benchEnv) waitSlotActive(ctx context.Context, slot string) error {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var active bool
		if err := e.queryRow(ctx, `SELECT active FROM pg_replication_slots WHERE slot_name = '`+slot+`'`, &active); err == nil && active {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("slot %s not active after 15 s", slot)
}
