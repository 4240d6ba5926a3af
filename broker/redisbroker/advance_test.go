package redisbroker

import (
	"context"
	"fmt"
	"testing"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
	"github.com/pgrealtime/pgrealtime/internal/redistest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestQuietStreamAdvancesToTheWatermark: a new cluster has no event yet,
// but once its leader has raised the flushed watermark every node reports
// <W>:0 (subscribers need a position before the first event, PROTOCOL 3),
// and the first event after it is continuous: no Reset. A node does not
// advance past an entry it has not applied.
func TestQuietStreamAdvancesToTheWatermark(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	leader := startNode(t, srv, 100)
	follower := startNode(t, srv, 100)
	ctx := context.Background()
	if err := leader.b.Begin(ctx, broker.Position{LSN: 900}); err != nil {
		t.Fatal(err)
	}
	raise := func(safe uint64) {
		waitUntil(t, fmt.Sprintf("the watermark at %X", safe), func() (bool, string) {
			d, err := leader.b.Durable(safe)
			return err == nil && d >= safe, fmt.Sprintf("Durable = %X, %v", d, err)
		})
	}
	raise(2000)
	for _, n := range []*node{leader, follower} {
		n.rec.wait(t, "the node at 0/7D0:0", func(r *recorder) bool { return r.last == broker.Position{LSN: 2000} })
	}
	// The leader restarts with the slot's confirmed position below W (it
	// acknowledges after raising W): the first entry names <900>-0, before
	// the nodes' position, which is continuous.
	if err := leader.b.Begin(ctx, broker.Position{LSN: 1500}); err != nil {
		t.Fatal(err)
	}
	if err := leader.b.Append(ctx, tx(3000, 2)); err != nil {
		t.Fatal(err)
	}
	raise(3008)
	for _, n := range []*node{leader, follower} {
		n.rec.wait(t, "the transaction", func(r *recorder) bool { return len(r.events) == 2 })
		n.rec.mu.Lock()
		resets, implicit := len(n.rec.resets), len(n.rec.implicit)
		n.rec.mu.Unlock()
		if resets != 0 || implicit != 0 {
			t.Fatalf("resets %d, implicit resets %d: the first event after the watermark must be continuous", resets, implicit)
		}
		n.rec.wait(t, "the node at 0/BC0:0", func(r *recorder) bool { return r.last == broker.Position{LSN: 3008} })
	}
}

// TestStreamLagMetric: pgrealtime_cluster_stream_lag_bytes is the WAL
// between the stream's newest entry and the last one a node applied, and 0
// once the node is idle with everything applied.
func TestStreamLagMetric(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	n := startNode(t, srv, 100)
	ctx := context.Background()
	if err := n.b.Begin(ctx, broker.Position{LSN: 900}); err != nil {
		t.Fatal(err)
	}
	if err := n.b.Append(ctx, tx(5000, 1)); err != nil {
		t.Fatal(err)
	}
	n.rec.wait(t, "the transaction", func(r *recorder) bool { return len(r.events) == 1 })
	behind := &follower{b: n.b, applied: broker.Position{LSN: 1000, Index: 1}, hasApplied: true}
	defer behind.dropConn()
	if err := behind.measureLag(ctx); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(metrics.ClusterStreamLag); got != 4000 {
		t.Fatalf("lag %v bytes, want 4000 (0/1388 - 0/3E8)", got)
	}
	waitUntil(t, "the idle node's lag back to 0", func() (bool, string) {
		got := testutil.ToFloat64(metrics.ClusterStreamLag)
		return got == 0, fmt.Sprintf("lag %v", got)
	})
}
