package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

type catchupResult struct {
	Rows         int     `json:"rows"`
	TxRows       int     `json:"tx_rows"`
	WriteSeconds float64 `json:"write_seconds"` // committing the backlog
	// pg_recvlogical draining its copy of the slot to /dev/null.
	RecvSeconds float64 `json:"recv_seconds"`
	RecvRate    float64 `json:"recv_rows_per_s"`
	RecvCPU     float64 `json:"recv_cpu_s"`
	// pgrealtime from process start until the subscriber has every row.
	Seconds   float64 `json:"seconds"`
	Rate      float64 `json:"rows_per_s"`
	Received  int     `json:"received"`
	Resumed   bool    `json:"resumed"` // subscribed with since (else live, late)
	ServerCPU float64 `json:"server_cpu_s"`
	History   int     `json:"history_size"`
	Ratio     float64 `json:"ratio"`
}

// catchup measures how fast pgrealtime drains a backlog compared with
// pg_recvlogical draining the same WAL. It returns the catch-up server,
// still running.
func (e *benchEnv) catchup(ctx context.Context) (*server, *catchupResult, error) {
	cfg := e.cfg
	r := &catchupResult{Rows: cfg.CatchupRows, TxRows: cfg.CatchupTx}

	// 1. A first run creates the publication and the slot; a subscriber
	//    sees a marker row and keeps its position, as a browser would.
	s1, err := e.startReady(ctx)
	if err != nil {
		return nil, r, err
	}
	since, err := e.markerPosition(ctx, s1)
	if stopErr := s1.stop(); err == nil && stopErr != nil {
		err = stopErr
	}
	if err != nil {
		return nil, r, err
	}
	if err := e.queryRow(ctx, `SELECT coalesce(string_agg(pubname, ',' ORDER BY pubname), '') FROM pg_publication`, &e.pubs); err != nil {
		return nil, r, err
	}
	if e.pubs == "" {
		return nil, r, errors.New("pgrealtime created no publication")
	}
	var slots int
	if err := e.queryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = '`+slotName+`'`, &slots); err != nil || slots != 1 {
		return nil, r, fmt.Errorf("pgrealtime created no slot %q (%v)", slotName, err)
	}
	// 2. pg_recvlogical's slot starts at the same point.
	if err := e.exec(ctx, `SELECT pg_create_logical_replication_slot('`+recvSlot+`', 'pgoutput')`); err != nil {
		return nil, r, err
	}

	// 3. The backlog, committed while pgrealtime is down.
	conn, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		return nil, r, err
	}
	t0 := time.Now()
	for done := 0; done < cfg.CatchupRows; done += cfg.CatchupTx {
		n := min(cfg.CatchupTx, cfg.CatchupRows-done)
		if _, err := conn.Exec(ctx, `INSERT INTO bench (v, note) SELECT g, 'backlog row ' || g FROM generate_series($1::int, $2::int) g`, done+1, done+n); err != nil {
			conn.Close(ctx)
			return nil, r, fmt.Errorf("write backlog: %w", err)
		}
	}
	r.WriteSeconds = time.Since(t0).Seconds()
	var endLSN string
	var lastID int64
	err = conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text, max(id) FROM bench`).Scan(&endLSN, &lastID)
	conn.Close(ctx)
	if err != nil {
		return nil, r, err
	}
	e.logf("   backlog of %d rows written in %.1f s; draining with pg_recvlogical", cfg.CatchupRows, r.WriteSeconds)

	// 4. pg_recvlogical: Postgres's own decoding, output thrown away.
	recv := exec.CommandContext(ctx, filepath.Join(e.cluster.BinDir, "pg_recvlogical"),
		"-d", e.dbURL, "-S", recvSlot, "--start", "--no-loop",
		"-o", "proto_version=1", "-o", "publication_names="+e.pubs,
		"-E", endLSN, "-f", "/dev/null")
	t0 = time.Now()
	out, err := recv.CombinedOutput()
	r.RecvSeconds = time.Since(t0).Seconds()
	if err != nil {
		return nil, r, fmt.Errorf("pg_recvlogical: %w: %s", err, out)
	}
	r.RecvRate = float64(cfg.CatchupRows) / r.RecvSeconds
	r.RecvCPU = (recv.ProcessState.UserTime() + recv.ProcessState.SystemTime()).Seconds()
	e.logf("   pg_recvlogical: %.2f s, %.0f rows/s; now pgrealtime", r.RecvSeconds, r.RecvRate)

	// 5. pgrealtime: start it, connect a subscriber as soon as the port
	//    answers, resume from the marker, wait for the last row.
	r.History = max(10000, cfg.CatchupRows+cfg.CatchupRows/10)
	srv, err := startServer(e.srv, "--max-connections", "25000", "--history-size", strconv.Itoa(r.History))
	if err != nil {
		return nil, r, err
	}
	fail := func(err error) (*server, *catchupResult, error) {
		srv.stop()
		return nil, r, err
	}
	cpu0, _ := cpuTime(srv.Pid())
	deadline := 5 * time.Minute
	if cfg.Quick {
		deadline = time.Minute
	}
	cctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	var cl *wsClient
	for {
		cl, err = dialClient(cctx, srv.URL(), e.token)
		if err == nil {
			break
		}
		if srv.exited() || cctx.Err() != nil {
			return fail(fmt.Errorf("connect to pgrealtime: %w: %s", err, srv.logTail()))
		}
		time.Sleep(5 * time.Millisecond)
	}
	defer cl.close()
	last := []byte(strconv.FormatInt(lastID, 10))
	var lastAt time.Time
	onEvent := func(msg []byte, at time.Time) {
		r.Received++
		if string(jsonField(msg, "record_id")) == string(last) {
			lastAt = at
		}
	}
	_, err = cl.subscribe(cctx, []string{"bench.*"}, since, onEvent)
	r.Resumed = err == nil
	var pe *protocolError
	if errors.As(err, &pe) && pe.Code == "history_unavailable" {
		e.logf("   resume refused (%s): subscribing live; early rows will be missed", pe.Msg)
		_, err = cl.subscribe(cctx, []string{"bench.*"}, "", onEvent)
	}
	if err != nil {
		return fail(err)
	}
	for lastAt.IsZero() {
		msg, err := cl.next(cctx)
		if err != nil {
			return fail(fmt.Errorf("catch-up subscriber after %d of %d rows: %w", r.Received, cfg.CatchupRows, err))
		}
		at := time.Now()
		if string(jsonField(msg, "type")) == "record_event" {
			onEvent(msg, at)
		}
	}
	cpu1, _ := cpuTime(srv.Pid())
	r.Seconds = lastAt.Sub(srv.Started).Seconds()
	r.Rate = float64(cfg.CatchupRows) / r.Seconds
	r.ServerCPU = (cpu1 - cpu0).Seconds()
	r.Ratio = r.Rate / r.RecvRate
	e.logf("   pgrealtime: %.2f s, %.0f rows/s (%.2fx pg_recvlogical), subscriber got %d rows", r.Seconds, r.Rate, r.Ratio, r.Received)
	if r.Received < cfg.CatchupRows {
		return srv, r, fmt.Errorf("catch-up subscriber received %d of %d rows", r.Received, cfg.CatchupRows)
	}
	return srv, r, nil
}

// markerPosition subscribes, commits one row and returns the position of
// its event.
func (e *benchEnv) markerPosition(ctx context.Context, s *server) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cl, err := dialClient(ctx, s.URL(), e.token)
	if err != nil {
		return "", err
	}
	defer cl.close()
	if _, err := cl.subscribe(ctx, []string{"bench.*"}, "", nil); err != nil {
		return "", err
	}
	if err := e.exec(ctx, insertSQL, 0); err != nil {
		return "", err
	}
	for {
		msg, err := cl.next(ctx)
		if err != nil {
			return "", fmt.Errorf("wait for the marker row's event: %w", err)
		}
		if string(jsonField(msg, "type")) == "record_event" {
			return string(jsonField(msg, "position")), nil
		}
	}
}
