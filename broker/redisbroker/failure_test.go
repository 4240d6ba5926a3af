package redisbroker

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/redistest"
)

func txRange(first uint64, n int) []*broker.Tx {
	var out []*broker.Tx
	for i := range n {
		out = append(out, tx(first+uint64(100*i), 1+i%3))
	}
	return out
}

// TestRedisRestartWithAOFKeepsTheChain: Redis restarts with its
// append-only file (gracefully or killed): the nodes retry, the leader
// begins again, and the p chain continues: no reset, nothing lost, nothing
// twice.
func TestRedisRestartWithAOFKeepsTheChain(t *testing.T) {
	for _, down := range []struct {
		name string
		f    func(*redistest.Server)
	}{{"graceful", (*redistest.Server).Stop}, {"sigkill", (*redistest.Server).Kill}} {
		t.Run(down.name, func(t *testing.T) {
			srv := redistest.Start(t, redistest.Options{AOF: true})
			a, b := startNode(t, srv, 1000), startNode(t, srv, 1000)
			before, after := txRange(1000, 10), txRange(5000, 10)
			r := newReader(a.b, 900)
			r.publish(t, before...)
			down.f(srv)
			waitUntil(t, "the nodes see Redis down", func() (bool, string) {
				return a.b.Ready() != nil && b.b.Ready() != nil, "ready"
			})
			srv.Restart()
			r.publish(t, after...)
			want := txPositions(append(before, after...)...)
			for _, n := range []*node{a, b} {
				n.rec.waitPos(t, want[len(want)-1])
				got, resets, implicit := n.rec.snapshot()
				if !slices.Equal(got, want) || len(resets) != 0 || len(implicit) != 0 {
					t.Fatalf("applied %v resets %v implicit %v; want %v without a reset", got, resets, implicit, want)
				}
			}
			t.Logf("reader errors across the restart: %q", r.log)
		})
	}
}

// TestRedisRestartEmptyResets: Redis comes back empty; the leader cannot
// vouch for a predecessor (no watermark), so the first new entry carries
// the base <acknowledged LSN>-0 and every node resets to it: a since before
// it is history_unavailable, never a silent gap. A node started afterwards
// takes the same base.
func TestRedisRestartEmptyResets(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a, b := startNode(t, srv, 1000), startNode(t, srv, 1000)
	before, after := txRange(1000, 5), txRange(5000, 5)
	r := newReader(a.b, 900)
	r.publish(t, before...)
	for _, n := range []*node{a, b} {
		n.rec.waitPos(t, txPositions(before...)[len(txPositions(before...))-1])
	}
	acked := r.acked
	srv.RestartEmpty()
	r.publish(t, after...)
	base := broker.Position{LSN: acked}
	want := txPositions(append(before, after...)...)
	for _, n := range []*node{a, b} {
		n.rec.waitPos(t, want[len(want)-1])
		got, resets, implicit := n.rec.snapshot()
		if !slices.Equal(got, want) || !slices.Equal(resets, []broker.Position{base}) || len(implicit) != 0 {
			t.Fatalf("applied %v resets %v implicit %v; want %v with one reset to %s", got, resets, implicit, want, base)
		}
	}
	c := startNode(t, srv, 1000)
	c.rec.waitPos(t, want[len(want)-1])
	got, resets, _ := c.rec.snapshot()
	if !slices.Equal(got, txPositions(after...)) || !slices.Equal(resets, []broker.Position{base}) {
		t.Fatalf("new node: applied %v resets %v; want %v on base %s", got, resets, txPositions(after...), base)
	}
}

// TestTrimmingOvertakesAPausedFollower: a follower that stopped reading
// while the stream was trimmed past it resets when it reads again; a
// follower that kept up does not.
func TestTrimmingOvertakesAPausedFollower(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	const history = 10
	// The leader trims without grace: b is overtaken at once.
	a := startNode(t, srv, history, func(_ *Config, br *Broker) { br.trimGrace = 0 })
	var pause atomic.Bool
	paused, gate := make(chan struct{}, 1), make(chan struct{})
	b := startNode(t, srv, history, func(_ *Config, br *Broker) {
		br.beforeRead = func(ctx context.Context) {
			if pause.Load() {
				paused <- struct{}{}
				select {
				case <-gate:
				case <-ctx.Done():
				}
			}
		}
	})
	r := newReader(a.b, 900)
	first := tx(1000, 1)
	r.publish(t, first)
	b.rec.waitPos(t, first.Events[0].Position)
	pause.Store(true)
	second := tx(1100, 1)
	r.publish(t, second)
	select {
	case <-paused:
	case <-time.After(waitTimeout):
		t.Fatal("follower b did not reach its pause")
	}
	// 300 more entries, in steps smaller than the history so that a, which
	// keeps reading, is never overtaken.
	rest := txRange(2000, 300)
	for i := 0; i < len(rest); i += 5 {
		chunk := rest[i : i+5]
		r.publish(t, chunk...)
		a.rec.waitPos(t, chunk[4].Events[len(chunk[4].Events)-1].Position)
	}
	pause.Store(false)
	close(gate)
	last := rest[len(rest)-1].Events[len(rest[len(rest)-1].Events)-1].Position
	b.rec.waitPos(t, last)
	if _, resets, implicit := a.rec.snapshot(); len(resets) != 0 || len(implicit) != 0 {
		t.Fatalf("node a (kept up): resets %v implicit %v", resets, implicit)
	}
	got, resets, implicit := b.rec.snapshot()
	if len(resets) != 1 || len(implicit) != 0 || !second.Events[0].Position.Less(resets[0]) {
		t.Fatalf("node b: resets %v implicit %v; want one reset after %s", resets, implicit, second.Events[0].Position)
	}
	if got[1] != second.Events[0].Position || got[len(got)-1] != last || len(got) > 2+history+200 {
		t.Fatalf("node b applied %v", got)
	}
}

// TestUndecodableEntryResetsAtTheNext: an entry that does not decode is
// skipped with a loud log, and the node resets at the next entry (its base
// names the skipped entry, so no client can resume across it).
func TestUndecodableEntryResetsAtTheNext(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	n := startNode(t, srv, 100)
	w := newClient(t, srv)
	t1, t3 := tx(100, 1), tx(300, 1)
	xadd(t, w, t1.Events[0], 1, broker.Position{LSN: 50})
	xaddRaw(t, w, "200-1", "100-1", "\x01garbage")
	xadd(t, w, t3.Events[0], 1, broker.Position{LSN: 200, Index: 1})
	n.rec.waitPos(t, t3.Events[0].Position)
	got, resets, implicit := n.rec.snapshot()
	want := []broker.Position{t1.Events[0].Position, t3.Events[0].Position}
	if !slices.Equal(got, want) || !slices.Equal(resets, []broker.Position{{LSN: 200, Index: 1}}) || len(implicit) != 0 {
		t.Fatalf("applied %v resets %v implicit %v; want %v and one reset to 200-1", got, resets, implicit, want)
	}
	if err := n.b.Ready(); err != nil {
		t.Fatalf("Ready after a bad entry: %v", err)
	}
}

// TestTransactionLargerThanTheHistory: one transaction of many more events
// than the history is applied whole by every node, none of which resets
// (the trim grace keeps what they have not read yet).
func TestTransactionLargerThanTheHistory(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	const history = 10
	a, b := startNode(t, srv, history), startNode(t, srv, history)
	big := tx(1000, 2000)
	newReader(a.b, 900).publish(t, tx(900, 1), big, tx(1100, 1))
	want := txPositions(tx(900, 1), big, tx(1100, 1))
	for _, n := range []*node{a, b} {
		n.rec.waitPos(t, want[len(want)-1])
		got, resets, implicit := n.rec.snapshot()
		if !slices.Equal(got, want) || len(resets) != 0 || len(implicit) != 0 {
			t.Fatalf("applied %d events, resets %v implicit %v; want %d events without a reset", len(got), resets, implicit, len(want))
		}
	}
}

// TestReadyReportsAStalledRedis: a Redis that stops answering (paused: the
// connection stays up) makes the node not ready within the XREAD's BLOCK
// time plus its grace; it is ready again once Redis answers.
func TestReadyReportsAStalledRedis(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	n := startNode(t, srv, 100, func(_ *Config, b *Broker) { b.readBlock = 200 * time.Millisecond })
	srv.Pause()
	start := time.Now()
	waitUntil(t, "the node is not ready", func() (bool, string) {
		return n.b.Ready() != nil, "still ready"
	})
	d := time.Since(start)
	t.Logf("not ready after %s: %v", d, n.b.Ready())
	if limit := 200*time.Millisecond + readGraceTime + 2*time.Second; d > limit {
		t.Fatalf("not ready only after %s, want within %s", d, limit)
	}
	srv.Resume()
	n.waitReady(t)
}
