package clustertest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestClusterSteadyAndView: under the steady load every client gets every
// row once, in order, with the same positions on every node; /readyz and
// GET /api/cluster agree on the one leader and list the three nodes.
func TestClusterSteadyAndView(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := newEnv(t)
	l := e.startLoad(ctx)
	leader := e.c.Leader(ctx, 10*time.Second)
	checkView(ctx, t, e, leader)
	l.waitCaughtUp(ctx, l.w.next()+writeRate) // another second of rows
	e.waitAcknowledged(ctx, l.chk.position(writeRate), 10*time.Second)
	l.finish(ctx, false)
}

// waitAcknowledged waits until the slot's confirmed_flush_lsn has passed
// the event at pos, under the running load: the leader acknowledges what
// Redis accepted (PROTOCOL 8), else the slot holds WAL without bound.
func (e *env) waitAcknowledged(ctx context.Context, pos string, timeout time.Duration) {
	e.t.Helper()
	lsn, _, _ := strings.Cut(pos, ":")
	conn, err := pgx.Connect(ctx, e.db)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		var done bool
		var confirmed string
		err := conn.QueryRow(ctx, `SELECT confirmed_flush_lsn::text, confirmed_flush_lsn > $1::pg_lsn FROM pg_replication_slots WHERE database = current_database()`, lsn).Scan(&confirmed, &done)
		if err != nil {
			e.t.Fatalf("read the slot: %v", err)
		}
		if done {
			e.t.Logf("the slot acknowledged the event at %s %s after it reached every client", pos, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			e.t.Errorf("the slot's confirmed_flush_lsn is still %s, %s after the event at %s reached every client under a steady %d rows/s: the leader does not acknowledge what Redis accepted, and the slot holds back WAL", confirmed, timeout, pos, writeRate)
			return
		}
		select {
		case <-ctx.Done():
			e.t.Fatal(ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkView waits (the registry writes every second) until every node's
// GET /api/cluster names leader and lists the three nodes with their roles.
func checkView(ctx context.Context, t *testing.T, e *env, leader int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for i := range e.c.Nodes {
		for {
			err := viewMatches(ctx, e, i, leader)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET /api/cluster on %s: %v", e.c.IDs[i], err)
			}
			select {
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

func viewMatches(ctx context.Context, e *env, i, leader int) error {
	v, err := e.c.View(ctx, i)
	if err != nil {
		return err
	}
	if v.Node != e.c.IDs[i] || v.Leader != e.c.IDs[leader] || len(v.Nodes) != nodes {
		return fmt.Errorf("%+v: want node %s, leader %s, %d nodes", v, e.c.IDs[i], e.c.IDs[leader], nodes)
	}
	for k, n := range v.Nodes {
		want := "follower"
		if k == leader {
			want = "leader"
		}
		if n.ID != e.c.IDs[k] || n.Role != want || n.Seen.IsZero() || n.Connections < 0 {
			return fmt.Errorf("%+v: entry %d is %+v, want id %s, role %s, a seen time", v, k, n, e.c.IDs[k], want)
		}
	}
	return nil
}

// TestClusterLeaderFailover: under load, SIGKILL the leader (a new leader
// streams within 10 s; the dead node's clients resume on the others with
// since), start it again, then SIGTERM the new leader (within 2 s). No row
// is lost or duplicated at any client, no gap event.
func TestClusterLeaderFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	e := newEnv(t)
	l := e.startLoad(ctx)

	first := e.c.Leader(ctx, 10*time.Second)
	l.takeover(ctx, "SIGKILL of leader "+e.c.IDs[first], killTakeover, e.c.Nodes[first].Kill)
	second := e.c.Leader(ctx, killTakeover)
	if second == first {
		t.Fatalf("%s still leads after its SIGKILL", e.c.IDs[first])
	}
	l.waitCaughtUp(ctx, l.w.next())
	for i, cn := range l.conns {
		if cn.home == first && int(cn.node.Load()) == first {
			t.Errorf("client %d (home %s) is still on the killed node", i, e.c.IDs[first])
		}
	}
	e.c.Restart(first)

	l.takeover(ctx, "SIGTERM of leader "+e.c.IDs[second], termTakeover, e.c.Nodes[second].Stop)
	third := e.c.Leader(ctx, termTakeover+5*time.Second)
	if third == second {
		t.Fatalf("%s still leads after its SIGTERM", e.c.IDs[second])
	}
	e.c.Restart(second)
	l.waitCaughtUp(ctx, l.w.next())
	l.finish(ctx, false)
}
