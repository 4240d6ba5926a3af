package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrealtime/pgrealtime/internal/pgcluster"
)

// benchEnv is what every measurement shares: one Postgres, one database with
// the `bench` table, the pgrealtime binary and its settings.
type benchEnv struct {
	cfg     config
	log     io.Writer
	work    string
	cluster *pgcluster.Cluster
	dbURL   string
	srv     serverOptions
	token   string
	self    string
	pubs    string // publication_names for pg_recvlogical: the ones pgrealtime uses
	// recvlogical is pg_recvlogical of the same installation as the server.
	recvlogical string
}

const (
	dbName    = "bench"
	slotName  = "pgrealtime"  // pgrealtime's default slot
	recvSlot  = "bench_recv"  // pg_recvlogical's copy
	recvSlot2 = "bench_recv2" // and a second one, for a second drain
	// Columns are named so that none collides with an envelope key the
	// clients look up (type, timestamp, record_id, position).
	tableSQL = `CREATE TABLE bench (id bigserial PRIMARY KEY, v integer NOT NULL, note text NOT NULL);
ALTER TABLE bench SET (autovacuum_enabled = false);`
	insertSQL = `INSERT INTO bench (v, note) VALUES ($1, 'live row')`
)

func (e *benchEnv) logf(format string, args ...any) {
	fmt.Fprintf(e.log, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func runBench(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	raiseFileLimit()
	e := &benchEnv{cfg: cfg, log: stderr}
	var err error
	if e.work, err = os.MkdirTemp("", "pgrealtime-bench-"); err != nil {
		return err
	}
	if cfg.KeepWork {
		e.logf("work directory %s (kept)", e.work)
	} else {
		defer os.RemoveAll(e.work)
	}
	if e.self, err = selfPath(); err != nil {
		return err
	}
	if cfg.Binary == "" {
		if cfg.Binary, err = buildPgrealtime(ctx, e.work); err != nil {
			return err
		}
	}
	if e.srv.Binary, err = filepath.Abs(cfg.Binary); err != nil {
		return err
	}

	e.logf("starting a throwaway Postgres")
	e.cluster, err = pgcluster.Start(ctx, pgcluster.Options{
		// synchronous_commit back to Postgres's default (on): with it off, a
		// walsender sees a commit only when the WAL writer flushes (up to
		// wal_writer_delay = 200 ms later), which is not what users run.
		// fsync stays off: the disk is not what is measured. No checkpoint
		// in the middle of a measurement.
		Settings: []string{"synchronous_commit = on", "max_wal_size = '16GB'", "checkpoint_timeout = '1h'"},
	})
	if err != nil {
		return err
	}
	defer e.cluster.Close()
	if e.recvlogical, err = findRecvlogical(e.cluster.BinDir); err != nil {
		return err
	}
	if err := e.setupDB(ctx); err != nil {
		return err
	}

	res := &results{Machine: machine(), Date: time.Now().UTC(), Command: cfg.Command, Quick: cfg.Quick, Config: cfg}
	res.PGVersion = e.pgVersion(ctx)
	start := time.Now()

	if cfg.runs("catchup") {
		e.logf("1/6 catch-up: %d rows in %d-row transactions", cfg.CatchupRows, cfg.CatchupTx)
		c0 := readCPU()
		res.Catchup, err = e.catchup(ctx)
		res.CatchupErr = errString(err)
		res.Load = append(res.Load, measureLoad("catch-up", c0))
	} else if err := e.prepareSlots(ctx); err != nil {
		return err
	}
	if cfg.runs("latency") || cfg.runs("fanout") {
		srv, err := e.startLive(ctx, "--max-connections", "25000")
		if err != nil {
			return fmt.Errorf("start pgrealtime for the latency and fan-out measurements: %w", err)
		}
		if cfg.runs("latency") {
			e.logf("2/6 live latency")
			c0 := readCPU()
			res.Latency, err = e.latency(ctx, srv)
			res.LatencyErr = errString(err)
			res.Load = append(res.Load, measureLoad("live latency", c0))
		}
		if cfg.runs("fanout") {
			e.logf("3/6 fan-out to %d subscribers", cfg.FanoutSubs)
			c0 := readCPU()
			res.Fanout, err = e.fanout(ctx, srv)
			res.FanoutErr = errString(err)
			res.Load = append(res.Load, measureLoad("fan-out", c0))
		}
		if err := srv.stop(); err != nil {
			e.logf("stopping pgrealtime: %v", err)
		}
	}
	if cfg.runs("memory") {
		e.logf("4/6 memory per idle connection")
		c0 := readCPU()
		res.Memory, err = e.memory(ctx)
		res.MemoryErr = errString(err)
		res.Load = append(res.Load, measureLoad("memory", c0))
	}
	if cfg.runs("writes") {
		e.logf("5/6 write overhead: %d writers, %s per setup, %d rounds", cfg.Writers, cfg.WriteTime, cfg.WriteRounds)
		c0 := readCPU()
		res.Writes, err = e.writes(ctx)
		res.WritesErr = errString(err)
		res.Load = append(res.Load, measureLoad("write overhead", c0))
	}
	if cfg.runs("cluster") {
		e.logf("6/6 cluster: %d nodes + Redis", clusterNodes)
		c0 := readCPU()
		res.Cluster, err = e.clusterMode(ctx)
		res.ClusterErr = errString(err)
		res.Load = append(res.Load, measureLoad("cluster", c0))
	}
	res.Elapsed = time.Since(start)

	md := res.markdown()
	fmt.Fprint(stdout, md)
	if cfg.Markdown != "" {
		if err := os.WriteFile(cfg.Markdown, []byte(md), 0o644); err != nil {
			return err
		}
	}
	if cfg.Chart != "" {
		if err := res.chart(cfg.Chart); err != nil {
			return fmt.Errorf("chart: %w", err)
		}
	}
	if errs := res.errors(); len(errs) > 0 {
		return fmt.Errorf("%d measurement(s) failed: %s", len(errs), strings.Join(errs, "; "))
	}
	return nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// buildPgrealtime builds ./cmd/pgrealtime of the enclosing module.
func buildPgrealtime(ctx context.Context, work string) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
		return "", errors.New("no --pgrealtime binary given and not inside the pgrealtime module to build one")
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	bin := filepath.Join(work, "pgrealtime")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/pgrealtime")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/pgrealtime: %w: %s", err, out)
	}
	return bin, nil
}

func (e *benchEnv) setupDB(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, e.cluster.URL("postgres"))
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+dbName)
	conn.Close(ctx)
	if err != nil {
		return err
	}
	e.dbURL = e.cluster.URL(dbName)
	if err := e.exec(ctx, tableSQL); err != nil {
		return err
	}
	secret := make([]byte, 16)
	rand.Read(secret)
	e.srv.Secret = hex.EncodeToString(secret)
	e.srv.DatabaseURL = e.dbURL
	e.srv.WorkDir = e.work
	e.srv.Extra = e.cfg.ServerArgs
	e.srv.RulesFile = filepath.Join(e.work, "rules.yaml")
	if err := os.WriteFile(e.srv.RulesFile, []byte("collections:\n  bench:\n    read: \"true\"\n"), 0o644); err != nil {
		return err
	}
	e.token, err = adminToken(e.srv.Secret)
	return err
}

func (e *benchEnv) pgVersion(ctx context.Context) string {
	var v string
	_ = e.queryRow(ctx, "SHOW server_version", &v)
	return v
}

// exec runs SQL on the bench database with a short-lived connection.
func (e *benchEnv) exec(ctx context.Context, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

func (e *benchEnv) queryRow(ctx context.Context, sql string, dest ...any) error {
	conn, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.QueryRow(ctx, sql).Scan(dest...)
}

// startReady starts a pgrealtime process and waits for /readyz.
func (e *benchEnv) startReady(ctx context.Context, extra ...string) (*server, error) {
	s, err := startServer(e.srv, extra...)
	if err != nil {
		return nil, err
	}
	if err := s.waitReady(ctx, 60*time.Second); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// findRecvlogical finds pg_recvlogical beside the server binaries; the bin
// directory on PATH may hold only symlinks to initdb and pg_ctl, so their
// target directory is tried too.
func findRecvlogical(binDir string) (string, error) {
	dirs := []string{binDir}
	if p, err := filepath.EvalSymlinks(filepath.Join(binDir, "initdb")); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	for _, d := range dirs {
		p := filepath.Join(d, "pg_recvlogical")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("pg_recvlogical"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("pg_recvlogical not found in %s: install the PostgreSQL client programs", strings.Join(dirs, " or "))
}

// prepareSlots does what the catch-up measurement does first, for runs
// without it: pgrealtime creates its publication and slot, and
// pg_recvlogical gets its own slot.
func (e *benchEnv) prepareSlots(ctx context.Context) error {
	s, err := e.startReady(ctx)
	if err != nil {
		return err
	}
	if err := s.stop(); err != nil {
		return err
	}
	if err := e.queryRow(ctx, `SELECT coalesce(string_agg(pubname, ',' ORDER BY pubname), '') FROM pg_publication`, &e.pubs); err != nil {
		return err
	}
	return e.exec(ctx, `SELECT pg_create_logical_replication_slot('`+recvSlot+`', 'pgoutput')`)
}

// startLive starts pgrealtime and waits until a row committed now reaches a
// subscriber. /readyz turns ready when the stream is connected, but after a
// restart the walsender first re-reads WAL from the slot's restart_lsn
// (possibly a whole earlier backlog) before it sends anything new.
func (e *benchEnv) startLive(ctx context.Context, extra ...string) (*server, error) {
	s, err := e.startReady(ctx, extra...)
	if err != nil {
		return nil, err
	}
	if _, err := e.markerPosition(ctx, s); err != nil {
		s.stop()
		return nil, fmt.Errorf("wait for the stream to go live: %w", err)
	}
	return s, nil
}
