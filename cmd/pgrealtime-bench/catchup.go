package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

type catchupResult struct {
	Rows         int     `json:"rows"`
	TxRows       int     `json:"tx_rows"`
	WriteSeconds float64 `json:"write_seconds"` // committing the backlog
	// pg_recvlogical draining its copies of the slot to /dev/null: each
	// drain, and the rate over their mean time.
	Recv        []recvDrain `json:"recv"`
	RecvSeconds float64     `json:"recv_seconds"`
	RecvRate    float64     `json:"recv_rows_per_s"`
	// Runs of pgrealtime, each over its own backlog of Rows rows.
	Runs []catchupRun `json:"runs"`
}

// recvDrain is one pg_recvlogical run over the backlog.
type recvDrain struct {
	Slot    string  `json:"slot"`
	Seconds float64 `json:"seconds"`
	CPU     float64 `json:"cpu_s"`
	End     string  `json:"end"` // how pg_recvlogical says it stopped
}

// drainRecv runs pg_recvlogical over slot up to endLSN and records it.
func (e *benchEnv) drainRecv(ctx context.Context, r *catchupResult, slot, endLSN string) error {
	recv := exec.CommandContext(ctx, e.recvlogical,
		"-d", e.dbURL, "-S", slot, "--start", "--no-loop",
		"-o", "proto_version=1", "-o", "publication_names="+e.pubs,
		"-E", endLSN, "-f", "/dev/null", "-v")
	t0 := time.Now()
	out, err := recv.CombinedOutput()
	d := recvDrain{Slot: slot, Seconds: time.Since(t0).Seconds()}
	if err != nil {
		return fmt.Errorf("pg_recvlogical: %w: %s", err, out)
	}
	d.CPU = (recv.ProcessState.UserTime() + recv.ProcessState.SystemTime()).Seconds()
	d.End = lastLine(string(out))
	r.Recv = append(r.Recv, d)
	e.logf("   pg_recvlogical (%s): %.2f s, %.0f rows/s (%s)", slot, d.Seconds, float64(e.cfg.CatchupRows)/d.Seconds, d.End)
	return nil
}

// catchupRun is pgrealtime draining one backlog with some settings.
type catchupRun struct {
	Label string   `json:"label"`
	Flags []string `json:"flags"`
	// Seconds from process start until the subscriber had every row (or,
	// when it did not get them all, until the server had published them).
	Seconds  float64 `json:"seconds"`
	Rate     float64 `json:"rows_per_s"`
	Ratio    float64 `json:"ratio"` // Rate / pg_recvlogical's
	Received int     `json:"received"`
	Resumed  bool    `json:"resumed"` // subscribed with since (else live, late)
	// ServerSeconds is when pgrealtime's own counter of WAL events
	// (/metrics) reached Rows: decoding and publishing, without the socket.
	ServerSeconds float64 `json:"server_seconds"`
	// FirstSeconds is when that counter first moved: process start,
	// connecting, setup, the first transaction decoded.
	FirstSeconds  float64 `json:"first_seconds"`
	SubscriberErr string  `json:"subscriber_error,omitempty"`
	ServerCPU     float64 `json:"server_cpu_s"`
	// NodeCPU (cluster) is each node's CPU seconds, the leader's first;
	// RedisCPU is Redis's over the catch-up.
	NodeCPU  []float64 `json:"node_cpu_s,omitempty"`
	RedisCPU float64   `json:"redis_cpu_s,omitempty"`
	// MachineCPU is the busy CPU seconds of the whole machine (/proc/stat)
	// from the start to the last row: every process, the benchmark's
	// Postgres and client included.
	MachineCPU float64 `json:"machine_cpu_s"`
}

// machineCPU is the busy CPU seconds of the whole machine since start.
func machineCPU(start cpuSample) float64 {
	end := readCPU()
	if dt := end.total - start.total; dt > 0 {
		return float64(end.busy-start.busy) / float64(dt) * float64(nprocs()) * end.at.Sub(start.at).Seconds()
	}
	return 0
}

// catchup measures how fast pgrealtime drains a backlog compared with
// pg_recvlogical draining the same WAL: once with default settings, once
// with a send queue that holds the whole backlog (what the delivery path
// can do when the slow-consumer limit does not apply).
func (e *benchEnv) catchup(ctx context.Context) (*catchupResult, error) {
	cfg := e.cfg
	r := &catchupResult{Rows: cfg.CatchupRows, TxRows: cfg.CatchupTx}

	// 1. A first run creates the publication and the slot; a subscriber
	//    sees a marker row and keeps its position, as a browser would.
	s1, err := e.startReady(ctx)
	if err != nil {
		return r, err
	}
	since, err := e.markerPosition(ctx, s1)
	if stopErr := s1.stop(); err == nil && stopErr != nil {
		err = stopErr
	}
	if err != nil {
		return r, err
	}
	if err := e.queryRow(ctx, `SELECT coalesce(string_agg(pubname, ',' ORDER BY pubname), '') FROM pg_publication`, &e.pubs); err != nil {
		return r, err
	}
	if e.pubs == "" {
		return r, errors.New("pgrealtime created no publication")
	}
	var slots int
	if err := e.queryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = '`+slotName+`'`, &slots); err != nil || slots != 1 {
		return r, fmt.Errorf("pgrealtime created no slot %q (%v)", slotName, err)
	}
	// 2. pg_recvlogical's two slots start at the same point: it drains the
	//    same backlog twice, before and after pgrealtime's first run, so
	//    that a burst of other load on the machine shows as a spread.
	for _, slot := range []string{recvSlot, recvSlot2} {
		if err := e.exec(ctx, `SELECT pg_create_logical_replication_slot('`+slot+`', 'pgoutput')`); err != nil {
			return r, err
		}
	}
	// 3. The backlog, committed while pgrealtime is down.
	endLSN, lastID, err := e.writeBacklog(ctx, r)
	if err != nil {
		return r, err
	}
	e.logf("   backlog of %d rows written in %.1f s; draining with pg_recvlogical", cfg.CatchupRows, r.WriteSeconds)
	// A walsender decodes only flushed WAL; with synchronous_commit on it
	// is flushed at commit, but make sure.
	if err := e.waitFlushed(ctx); err != nil {
		return r, err
	}
	// 4. pg_recvlogical: Postgres's own decoding, output thrown away.
	if err := e.drainRecv(ctx, r, recvSlot, endLSN); err != nil {
		return r, err
	}

	history := max(10000, cfg.CatchupRows+cfg.CatchupRows/10)
	variants := []catchupRun{
		{Label: "default send queue", Flags: []string{"--history-size", strconv.Itoa(history)}},
		{Label: "send queue holding the backlog", Flags: []string{"--history-size", strconv.Itoa(history), "--send-queue", strconv.Itoa(history)}},
	}
	for i, v := range variants {
		if i > 0 {
			// A new backlog of the same size behind a new marker.
			s, err := e.startReady(ctx)
			if err != nil {
				return r, err
			}
			since, err = e.markerPosition(ctx, s)
			if stopErr := s.stop(); err == nil && stopErr != nil {
				err = stopErr
			}
			if err != nil {
				return r, err
			}
			if _, lastID, err = e.writeBacklog(ctx, r); err != nil {
				return r, err
			}
			if err := e.waitFlushed(ctx); err != nil {
				return r, err
			}
		}
		srv, err := e.catchupServer(ctx, &v, since, lastID)
		if srv != nil {
			srv.stop()
		}
		if err != nil {
			return r, fmt.Errorf("%s: %w", v.Label, err)
		}
		r.Runs = append(r.Runs, v)
		if i == 0 {
			// pg_recvlogical again, over the first backlog, from its
			// second slot; then the slot goes (it would hold WAL back).
			if err := e.drainRecv(ctx, r, recvSlot2, endLSN); err != nil {
				return r, err
			}
			if err := e.exec(ctx, `SELECT pg_drop_replication_slot('`+recvSlot2+`')`); err != nil {
				return r, err
			}
		}
	}
	var secs float64
	for _, d := range r.Recv {
		secs += d.Seconds / float64(len(r.Recv))
	}
	r.RecvSeconds = secs
	r.RecvRate = float64(cfg.CatchupRows) / secs
	for i := range r.Runs {
		r.Runs[i].Ratio = r.Runs[i].Rate / r.RecvRate
	}
	return r, nil
}

// writeBacklog commits CatchupRows rows in CatchupTx-row transactions.
// endLSN is the WAL insert position inside the last transaction, after its
// rows and before its commit record: pg_recvlogical (-E) stops when it
// receives that commit, whatever WAL other backends write meanwhile.
func (e *benchEnv) writeBacklog(ctx context.Context, r *catchupResult) (endLSN string, lastID int64, err error) {
	cfg := e.cfg
	conn, err := pgx.Connect(ctx, e.dbURL)
	if err != nil {
		return "", 0, err
	}
	defer conn.Close(ctx)
	t0 := time.Now()
	for done := 0; done < cfg.CatchupRows; done += cfg.CatchupTx {
		n := min(cfg.CatchupTx, cfg.CatchupRows-done)
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO bench (v, note) SELECT g, 'backlog row ' || g FROM generate_series($1::int, $2::int) g`, done+1, done+n); err != nil {
				return err
			}
			if done+n < cfg.CatchupRows {
				return nil
			}
			return tx.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text, max(id) FROM bench`).Scan(&endLSN, &lastID)
		})
		if err != nil {
			return "", 0, fmt.Errorf("write backlog: %w", err)
		}
	}
	r.WriteSeconds = time.Since(t0).Seconds()
	return endLSN, lastID, nil
}

// catchupServer starts pgrealtime with run.Flags over a waiting backlog,
// connects a subscriber as soon as the port answers, resumes from since and
// waits for the row lastID. Meanwhile it watches the server's own count of
// WAL events, so that the server's catch-up time is known even if the
// subscriber is dropped. It returns the server, still running.
func (e *benchEnv) catchupServer(ctx context.Context, run *catchupRun, since string, lastID int64) (*server, error) {
	cfg := e.cfg
	c0 := readCPU()
	srv, err := startServer(e.srv, run.Flags...)
	if err != nil {
		return nil, err
	}
	deadline := 5 * time.Minute
	if cfg.Quick {
		deadline = time.Minute
	}
	cctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	serverDone := make(chan time.Time, 1)
	var first time.Time
	go func() {
		for cctx.Err() == nil && !srv.exited() {
			n, ok := srv.metric(cctx, `pgrealtime_events_received_total{source="wal"}`)
			if ok && n > 0 && first.IsZero() {
				first = time.Now()
			}
			if ok && n >= float64(cfg.CatchupRows) {
				serverDone <- time.Now()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		close(serverDone)
	}()
	subDone, subErr := e.catchupSubscriber(cctx, srv, run, since, lastID)
	run.MachineCPU = machineCPU(c0)
	if subErr != nil {
		run.SubscriberErr = subErr.Error()
		e.logf("   catch-up subscriber: %v", subErr)
	}
	if at, ok := <-serverDone; ok {
		run.ServerSeconds = at.Sub(srv.Started).Seconds()
		run.FirstSeconds = first.Sub(srv.Started).Seconds()
	}
	cpu, _ := cpuTime(srv.Pid())
	run.ServerCPU = cpu.Seconds()
	switch {
	case subErr == nil:
		run.Seconds = subDone.Sub(srv.Started).Seconds()
	case run.ServerSeconds > 0:
		run.Seconds = run.ServerSeconds // the subscriber's share is reported as missing
	default:
		return srv, fmt.Errorf("pgrealtime did not publish the backlog within %s (subscriber: %v): %s", deadline, subErr, srv.logTail())
	}
	run.Rate = float64(cfg.CatchupRows) / run.Seconds
	e.logf("   pgrealtime (%s): %.2f s, %.0f rows/s; server published the first rows at %.2f s, all at %.2f s; subscriber got %d rows; CPU: pgrealtime %.2f s, machine %.2f s",
		run.Label, run.Seconds, run.Rate, run.FirstSeconds, run.ServerSeconds, run.Received, run.ServerCPU, run.MachineCPU)
	return srv, nil
}

// catchupSubscriber connects as soon as the server accepts, resumes from
// since and returns when the row lastID arrives.
func (e *benchEnv) catchupSubscriber(ctx context.Context, srv *server, r *catchupRun, since string, lastID int64) (time.Time, error) {
	var cl *wsClient
	var err error
	for {
		cl, err = dialClient(ctx, srv.URL(), e.token)
		if err == nil {
			break
		}
		if srv.exited() || ctx.Err() != nil {
			return time.Time{}, fmt.Errorf("connect: %w: %s", err, srv.logTail())
		}
		time.Sleep(5 * time.Millisecond)
	}
	defer cl.close()
	last := strconv.FormatInt(lastID, 10)
	var lastAt time.Time
	onEvent := func(msg []byte, at time.Time) {
		r.Received++
		if string(jsonField(msg, "record_id")) == last {
			lastAt = at
		}
	}
	_, err = cl.subscribe(ctx, []string{"bench.*"}, since, onEvent)
	r.Resumed = err == nil
	var pe *protocolError
	if errors.As(err, &pe) && pe.Code == "history_unavailable" {
		e.logf("   resume refused (%s): subscribing live; early rows will be missed", pe.Msg)
		_, err = cl.subscribe(ctx, []string{"bench.*"}, "", onEvent)
	}
	if err != nil {
		return time.Time{}, err
	}
	for lastAt.IsZero() {
		msg, err := cl.next(ctx)
		if err != nil {
			return time.Time{}, fmt.Errorf("after %d of %d rows: %w", r.Received, e.cfg.CatchupRows, err)
		}
		at := time.Now()
		if string(jsonField(msg, "type")) == "record_event" {
			onEvent(msg, at)
		}
	}
	if r.Received < e.cfg.CatchupRows {
		return lastAt, fmt.Errorf("received the last row but only %d of %d rows", r.Received, e.cfg.CatchupRows)
	}
	return lastAt, nil
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

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimPrefix(lines[len(lines)-1], "pg_recvlogical: ")
}

// waitFlushed waits until the WAL written so far is flushed.
func (e *benchEnv) waitFlushed(ctx context.Context) error {
	var target string
	if err := e.queryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`, &target); err != nil {
		return err
	}
	for i := 0; i < 500; i++ {
		var ok bool
		if err := e.queryRow(ctx, `SELECT pg_current_wal_flush_lsn() >= '`+target+`'::pg_lsn`, &ok); err != nil {
			return err
		}
		if ok {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("WAL not flushed to %s within 5 s", target)
}
