package redisbroker

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/redistest"
)

// TestTwoNodesDeliverTheSameSequence: two brokers on one Redis, one of them
// appending, apply the same transactions with the same positions, each as
// one unit; a third node started afterwards loads the same history.
func TestTwoNodesDeliverTheSameSequence(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a, b := startNode(t, srv, 1000), startNode(t, srv, 1000)
	rng := rand.New(rand.NewPCG(1, 2))
	var txs []*broker.Tx
	for i := range 60 {
		txs = append(txs, tx(uint64(1000+100*i), 1+rng.IntN(4)))
	}
	r := newReader(a.b, 900)
	r.publish(t, txs[:30]...)
	r.publish(t, txs[30:]...)
	want := txPositions(txs...)
	last := want[len(want)-1]
	for name, n := range map[string]*node{"a": a, "b": b} {
		n.rec.waitPos(t, last)
		got, resets, implicit := n.rec.snapshot()
		if !slices.Equal(got, want) {
			t.Errorf("node %s applied %v, want %v", name, got, want)
		}
		if len(resets) != 0 || len(implicit) != 0 {
			t.Errorf("node %s: resets %v, implicit %v; want none", name, resets, implicit)
		}
		n.rec.mu.Lock()
		if len(n.rec.txs) != len(txs) {
			t.Errorf("node %s: %d Apply calls, want one per transaction (%d)", name, len(n.rec.txs), len(txs))
		}
		n.rec.mu.Unlock()
	}
	c := startNode(t, srv, 1000)
	c.rec.waitPos(t, last)
	got, resets, _ := c.rec.snapshot()
	if !slices.Equal(got, want) {
		t.Errorf("late node loaded %v, want %v", got, want)
	}
	if !slices.Equal(resets, []broker.Position{{LSN: 900}}) {
		t.Errorf("late node's base: resets %v, want [the first entry's p 0/384:0]", resets)
	}
}

// TestLoadKeepsPartialTransactions: a node loading a trimmed history
// retains a transaction whose head was trimmed as it is, and waits for the
// rest of a transaction whose tail is not appended yet.
func TestLoadKeepsPartialTransactions(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	w := newClient(t, srv)
	// 100:2 and 100:3 of a 3-event transaction (100:1 trimmed), then 200:1
	// of a 2-event transaction whose 200:2 is still to come.
	t1, t2 := tx(100, 3), tx(200, 2)
	xadd(t, w, t1.Events[1], 3, broker.Position{LSN: 100, Index: 1})
	xadd(t, w, t1.Events[2], 3, t1.Events[1].Position)
	xadd(t, w, t2.Events[0], 2, t1.Events[2].Position)
	n := startNode(t, srv, 100)
	n.rec.waitPos(t, t1.Events[2].Position)
	xadd(t, w, t2.Events[1], 2, t2.Events[0].Position)
	n.rec.waitPos(t, t2.Events[1].Position)
	got, resets, implicit := n.rec.snapshot()
	want := []broker.Position{t1.Events[1].Position, t1.Events[2].Position, t2.Events[0].Position, t2.Events[1].Position}
	if !slices.Equal(got, want) || !slices.Equal(resets, []broker.Position{{LSN: 100, Index: 1}}) || len(implicit) != 0 {
		t.Fatalf("applied %v resets %v implicit %v; want %v after one reset to 100-1", got, resets, implicit, want)
	}
	n.rec.mu.Lock()
	defer n.rec.mu.Unlock()
	if len(n.rec.txs) != 2 || len(n.rec.txs[1]) != 2 {
		t.Fatalf("Apply calls %v: want the partial head, then the second transaction whole", n.rec.txs)
	}
}
