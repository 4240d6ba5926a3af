package clustertest

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// waitNodesReady waits until every node answers /readyz 200 again.
func (e *env) waitNodesReady(ctx context.Context, timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for i := range e.c.Nodes {
		for !e.c.Healthy(ctx, i) {
			if time.Now().After(deadline) {
				r, err := e.c.Ready(ctx, i)
				e.t.Fatalf("%s not ready within %s after the outage: %+v %v", e.c.IDs[i], timeout, r, err)
			}
			select {
			case <-ctx.Done():
				e.t.Fatal(ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// TestClusterRedisRestart: under load, Redis restarts with its AOF
// (appendfsync always): a pause, then every row, no gap event. Then Redis
// comes back empty (its files deleted): clients may get gap events
// (history_unavailable) but never a missing row without one, and every row
// written after the loss reaches everyone.
func TestClusterRedisRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newEnv(t)
	l := e.startLoad(ctx)

	at := time.Now()
	e.redis.Restart() // SIGTERM, then start on the same files
	e.waitNodesReady(ctx, 30*time.Second)
	l.waitCaughtUp(ctx, l.w.next())
	t.Logf("Redis restart with AOF: every client had every row %s after the stop began", time.Since(at).Round(time.Millisecond))
	if n := l.chk.gapEvents(); n > 0 {
		t.Errorf("Redis restart with AOF: %d gap events, want none (nothing was lost)", n)
	}

	// Rows the slot acknowledged are streamed by nothing again: once Redis
	// loses them, they are lost for a resume that needs them.
	acked := l.w.next()
	l.waitCaughtUp(ctx, acked)
	e.waitAcknowledged(ctx, l.chk.position(acked), 10*time.Second)
	at = time.Now()
	e.redis.RestartEmpty()
	e.waitNodesReady(ctx, 30*time.Second)
	l.waitCaughtUp(ctx, l.w.next())
	t.Logf("Redis restart without its data: clients caught up %s after the kill, %d gap events, %d cluster resets on the nodes",
		time.Since(at).Round(time.Millisecond), l.chk.gapEvents(), e.metricSum(ctx, "pgrealtime_cluster_resets_total"))

	// A node started after the loss has only what Redis has now: a
	// resume there from a position long before the loss (seq 10, whose
	// row the slot acknowledged) must be refused with history_unavailable,
	// or else replay every row after it: never a silent gap. The protocol
	// itself is used here, no client library.
	last := len(e.c.Nodes) - 1
	e.c.Nodes[last].Stop()
	e.c.Restart(last)
	since := l.chk.position(10)
	until := l.w.next()
	code, seqs, err := e.resumeRaw(ctx, last, since, until)
	switch {
	case err != nil:
		t.Fatalf("resume from seq 10 on %s (restarted after the loss): %v", e.c.IDs[last], err)
	case code == "history_unavailable":
		t.Logf("resume from seq 10 on %s (restarted after the loss): history_unavailable, as it should", e.c.IDs[last])
	case code != "":
		t.Errorf("resume from seq 10 on %s: error %s, want history_unavailable or every row after seq 10", e.c.IDs[last], code)
	default:
		for k, s := range seqs {
			if s != int64(11+k) {
				t.Errorf("resume from seq 10 (position %s) on %s, restarted after Redis lost its data: no history_unavailable, and the replay goes from seq %d to seq %d (a SILENT GAP: PROTOCOL 8 wants history_unavailable)",
					since, e.c.IDs[last], 10+int64(k), s)
				break
			}
		}
		if !t.Failed() {
			t.Logf("resume from seq 10 on %s (restarted after the loss): every row from seq 11 to %d", e.c.IDs[last], until)
		}
	}
	l.finish(ctx, true)
}

// metricSum adds up an unlabelled counter over the running nodes' /metrics
// (-1 when no node exports it).
func (e *env) metricSum(ctx context.Context, name string) int {
	sum, found := 0, false
	for _, n := range e.c.Nodes {
		if !n.Running() {
			continue
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.Addr+"/metrics", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				sum += int(f)
				found = true
			}
		}
	}
	if !found {
		return -1
	}
	return sum
}

// TestClusterPostgresCutAndRestartAll: under load, the test ends every
// session the nodes hold on Postgres (lock sessions, walsender, listeners):
// WebSockets stay, rows resume, nothing lost. Then all three nodes restart
// at once: clients resume with since on whichever node is up, nothing lost.
func TestClusterPostgresCutAndRestartAll(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newEnv(t)
	l := e.startLoad(ctx)

	at := time.Now()
	names := e.terminateNodeSessions(ctx, l.w.pid)
	t.Logf("ended %d node sessions: %v", len(names), names)
	l.waitCaughtUp(ctx, l.w.next())
	t.Logf("Postgres sessions cut: every client had every row %s later", time.Since(at).Round(time.Millisecond))
	e.waitNodesReady(ctx, 30*time.Second)

	at = time.Now()
	e.c.StopAll()
	e.c.StartAll()
	e.c.Leader(ctx, killTakeover)
	l.waitCaughtUp(ctx, l.w.next())
	t.Logf("all nodes restarted at once: every client had every row %s after the SIGTERMs", time.Since(at).Round(time.Millisecond))
	l.finish(ctx, false)
}

// terminateNodeSessions ends every backend of the test database except
// the writer's and its own, and returns their application_names. It fails
// the test when no lock session (pgrealtime-leader:<node id>) was among
// them.
func (e *env) terminateNodeSessions(ctx context.Context, writerPID uint32) []string {
	e.t.Helper()
	conn, err := pgx.Connect(ctx, e.db)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// In the select list, pg_terminate_backend runs only for the rows the
	// WHERE clause kept.
	rows, err := conn.Query(ctx, `SELECT application_name, pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND pid <> $1`, int64(writerPID))
	if err != nil {
		e.t.Fatalf("pg_terminate_backend: %v", err)
	}
	var names []string
	for rows.Next() {
		var name string
		var ended bool
		if err := rows.Scan(&name, &ended); err != nil {
			e.t.Fatalf("pg_terminate_backend: %v", err)
		}
		if ended {
			names = append(names, name)
		}
	}
	if err := rows.Err(); err != nil {
		e.t.Fatalf("pg_terminate_backend: %v", err)
	}
	locks := 0
	for _, n := range names {
		if strings.HasPrefix(n, "pgrealtime-leader:") {
			locks++
		}
	}
	if locks == 0 {
		e.t.Fatalf("no node's lock session (application_name pgrealtime-leader:<node id>) among the sessions ended: %v", names)
	}
	return names
}
