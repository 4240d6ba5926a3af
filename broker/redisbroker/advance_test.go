package redisbroker

import (
	"context"
	"fmt"
	"testing"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/redistest"
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
