package redisbroker

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/redistest"
)

// TestLeaderAppliesItsOwnTransactions: the appending node applies the
// very events it appended (handed over once Redis confirmed them, not
// read back and decoded), the other node decoded copies of them; both get
// the same sequence without a reset. (The session's first batch may reach
// the leader either way: its follower may be in an XREAD when it lands.)
func TestLeaderAppliesItsOwnTransactions(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a, b := startNode(t, srv, 1000), startNode(t, srv, 1000)
	first := tx(900, 1)
	r := newReader(a.b, 800)
	r.publish(t, first)
	a.rec.waitPos(t, first.Events[0].Position)
	txs := []*broker.Tx{tx(1000, 3), tx(1100, 200), tx(1200, 1)}
	r.publish(t, txs...)
	want := txPositions(append([]*broker.Tx{first}, txs...)...)
	appended := []*broker.Event{nil} // the first event: either way
	for _, x := range txs {
		appended = append(appended, x.Events...)
	}
	for _, n := range []*node{a, b} {
		n.rec.waitPos(t, want[len(want)-1])
		got, resets, implicit := n.rec.snapshot()
		if !slices.Equal(got, want) || len(resets) != 0 || len(implicit) != 0 {
			t.Fatalf("applied %v resets %v implicit %v; want %v", got, resets, implicit, want)
		}
	}
	a.rec.mu.Lock()
	defer a.rec.mu.Unlock()
	b.rec.mu.Lock()
	defer b.rec.mu.Unlock()
	for i, ev := range appended {
		if ev == nil {
			continue
		}
		if a.rec.events[i] != ev {
			t.Fatalf("the leader applied a copy of event %s, not the event it appended", ev.Position)
		}
		if b.rec.events[i] == ev {
			t.Fatalf("the other node applied the leader's own event %s", ev.Position)
		}
	}
}

// TestLeaderReadsWhatWasAppendedBeforeItsSession: a new leader whose
// follower has not read the previous leader's last entries reads them from
// the stream first, then applies its own transactions; in order, once.
func TestLeaderReadsWhatWasAppendedBeforeItsSession(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	gate := make(chan struct{})
	a := startNode(t, srv, 1000, heldUntil(gate))
	w := newClient(t, srv)
	old := tx(800, 3)
	prev := broker.Position{LSN: 700}
	for _, ev := range old.Events {
		xadd(t, w, ev, 3, prev)
		prev = ev.Position
	}
	if err := w.Do(context.Background(), w.B().Set().Key(a.b.keys.flushed).Value(watermarkText(900)).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	own := []*broker.Tx{tx(1000, 2), tx(1100, 1)}
	newReader(a.b, 900).publish(t, own...) // confirmed while the follower waits
	close(gate)
	want := txPositions(append([]*broker.Tx{old}, own...)...)
	a.rec.waitPos(t, want[len(want)-1])
	got, resets, implicit := a.rec.snapshot()
	if !slices.Equal(got, want) || len(resets) != 0 || len(implicit) != 0 {
		t.Fatalf("applied %v resets %v implicit %v; want %v", got, resets, implicit, want)
	}
}

// TestFormerLeaderReadsTheNextLeader: once a node stops appending (End,
// as cmd calls when it stops leading) its follower reads the next
// leader's entries as they land, not after its XREAD BLOCK time.
func TestFormerLeaderReadsTheNextLeader(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	slow := func(_ *Config, br *Broker) { br.readBlock = time.Minute }
	a, b := startNode(t, srv, 1000, slow), startNode(t, srv, 1000, slow)
	t1, t2 := tx(1000, 2), tx(1100, 1)
	ra := newReader(a.b, 900)
	ra.publish(t, t1)
	a.rec.waitPos(t, t1.Events[1].Position)
	a.b.End()
	newReader(b.b, ra.acked).publish(t, t2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.rec.waitPos(t, t2.Events[0].Position)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the former leader did not get the next leader's transaction within 5 s (its XREAD BLOCK is a minute)")
	}
	got, resets, _ := a.rec.snapshot()
	if want := txPositions(t1, t2); !slices.Equal(got, want) || len(resets) != 0 {
		t.Fatalf("applied %v resets %v; want %v", got, resets, want)
	}
}

// TestFollowerCatchesUpThroughFullBatches: a follower that resumes far
// behind reads full XREAD batches, the next one sent while it applies the
// last; it applies every event once, in order, without a reset.
func TestFollowerCatchesUpThroughFullBatches(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	gate := make(chan struct{})
	a := startNode(t, srv, 10000)
	b := startNode(t, srv, 10000, heldUntil(gate))
	var txs []*broker.Tx
	for i := 0; i < 3*readCount+10; i++ {
		txs = append(txs, tx(uint64(1000+10*i), 1))
	}
	newReader(a.b, 900).publish(t, txs...)
	close(gate)
	want := txPositions(txs...)
	b.rec.waitPos(t, want[len(want)-1])
	got, resets, implicit := b.rec.snapshot()
	if !slices.Equal(got, want) || len(resets) != 0 || len(implicit) != 0 {
		t.Fatalf("applied %d events (resets %v, implicit %v), want %d in order", len(got), resets, implicit, len(want))
	}
	if n := b.b.prefetchHits.Load(); n < 2 {
		t.Fatalf("%d batches came from an XREAD sent ahead, want at least 2 of the 3 full ones after the first", n)
	}
}

// TestLeaderReadsWhatItSkipsAfterABase: a session whose first entry's p is
// a base (no flushed watermark: a new cluster's first leader died before
// writing one, or Redis lost it) still skips the entries already in the
// stream; the new leader, behind on them, reads them before it applies
// its own transactions, as every other node does.
func TestLeaderReadsWhatItSkipsAfterABase(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	w := newClient(t, srv)
	loaded := tx(800, 1)
	xadd(t, w, loaded.Events[0], 1, broker.Position{LSN: 700})
	gate := make(chan struct{})
	a := startNode(t, srv, 1000, heldUntil(gate))
	a.rec.waitPos(t, loaded.Events[0].Position)
	prevLeader := tx(850, 2) // appended by a leader that never raised the watermark
	xadd(t, w, prevLeader.Events[0], 2, loaded.Events[0].Position)
	xadd(t, w, prevLeader.Events[1], 2, prevLeader.Events[0].Position)
	own := tx(1000, 1)
	newReader(a.b, 800).publish(t, own) // p of its entry: the base 800-0
	close(gate)
	want := txPositions(loaded, prevLeader, own)
	a.rec.waitPos(t, want[len(want)-1])
	got, resets, implicit := a.rec.snapshot()
	// The one reset is the history load's base.
	if !slices.Equal(got, want) || !slices.Equal(resets, []broker.Position{{LSN: 700}}) || len(implicit) != 0 {
		t.Fatalf("applied %v resets %v implicit %v; want %v after the load's reset to 0/2BC:0", got, resets, implicit, want)
	}
}
