package broker_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/broker/brokertest"
)

// The Hub delivers on the caller's goroutine: what Apply hands out has
// arrived when it returns, so these tests check recorders directly.

func hubCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func hubPats(t *testing.T, topics ...string) []broker.Pattern {
	t.Helper()
	var ps []broker.Pattern
	for _, s := range topics {
		p, err := broker.ParsePattern(s)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps
}

func hubSubscribe(t *testing.T, h *broker.Hub, since *broker.Position, topics ...string) *brokertest.Recorder {
	t.Helper()
	r := brokertest.NewRecorder()
	if _, err := h.Subscribe(hubCtx(t), r, hubPats(t, topics...), since); err != nil {
		t.Fatalf("subscribe %v: %v", topics, err)
	}
	return r
}

func positionsOf(evs []*broker.Event) string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Position.String())
	}
	return fmt.Sprint(out)
}

func pos(lsn uint64, idx uint32) broker.Position { return broker.Position{LSN: lsn, Index: idx} }

func TestHubResetResyncsAndRemovesEveryMember(t *testing.T) {
	h := broker.NewHub(broker.HubConfig{HistorySize: 16})
	defer h.Close()
	h.Apply(broker.Position{}, brokertest.Tx(100, "posts/create/1", "comments/create/1").Events)
	h.Apply(pos(100, 2), brokertest.Tx(200, "posts/create/2").Events)
	r1 := hubSubscribe(t, h, nil, "posts", "posts.2") // two patterns: still one Resync
	r2 := hubSubscribe(t, h, nil, "comments.*?id=eq.1")
	r3 := hubSubscribe(t, h, nil, "*")
	h.Apply(pos(200, 1), brokertest.Tx(300, "posts/create/3", "comments/create/1").Events)
	if n := len(r1.Events()) + len(r2.Events()) + len(r3.Events()); n != 4 {
		t.Fatalf("before the reset: %d deliveries, want 4", n)
	}

	reset := pos(500, 0)
	h.Reset(reset)
	for i, r := range []*brokertest.Recorder{r1, r2, r3} {
		if got := r.Resyncs(); got != 1 {
			t.Errorf("member %d: Resync called %d times, want 1", i+1, got)
		}
	}
	if got := h.Position(); got != reset {
		t.Fatalf("Position after Reset = %s, want %s", got, reset)
	}
	// A second reset finds no member left: nobody is told twice.
	h.Reset(reset)
	for i, r := range []*brokertest.Recorder{r1, r2, r3} {
		if got := r.Resyncs(); got != 1 {
			t.Errorf("member %d after a second Reset: Resync called %d times, want 1 (not removed?)", i+1, got)
		}
	}

	// Members are gone: the next transaction reaches none of them.
	before := [3]int{len(r1.Events()), len(r2.Events()), len(r3.Events())}
	h.Apply(reset, brokertest.Tx(600, "posts/create/6", "comments/create/1").Events)
	if after := [3]int{len(r1.Events()), len(r2.Events()), len(r3.Events())}; after != before {
		t.Fatalf("removed members still receive: %v → %v", before, after)
	}

	// The ring was cleared: a since before the base is unavailable, even
	// one that was retained before the reset.
	for _, since := range []broker.Position{pos(100, 1), pos(300, 2), pos(499, 9)} {
		if _, err := h.Subscribe(hubCtx(t), brokertest.NewRecorder(), hubPats(t, "*"), &since); !errors.Is(err, broker.ErrHistoryUnavailable) {
			t.Errorf("since %s before the base %s: err = %v, want ErrHistoryUnavailable", since, reset, err)
		}
	}
	// At or after the base it replays exactly what followed.
	h.Apply(pos(600, 2), brokertest.Tx(700, "posts/create/7").Events)
	for since, want := range map[broker.Position]string{
		reset:       "[0/258:1 0/258:2 0/2BC:1]",
		pos(600, 1): "[0/258:2 0/2BC:1]",
		pos(700, 1): "[]",
	} {
		r := hubSubscribe(t, h, &since, "*")
		if got := positionsOf(r.Events()); got != want {
			t.Errorf("since %s replayed %s, want %s", since, got, want)
		}
	}
}

func TestHubResetWithoutMembersSetsTheBase(t *testing.T) {
	h := broker.NewHub(broker.HubConfig{HistorySize: 4})
	defer h.Close()
	if !h.Position().IsZero() {
		t.Fatalf("fresh hub has position %s", h.Position())
	}
	base := pos(0x1000, 0)
	h.Reset(base)
	if got := h.Position(); got != base {
		t.Fatalf("Position = %s, want %s", got, base)
	}
	if err := h.WaitFor(hubCtx(t), broker.Position{}); err != nil {
		t.Fatalf("WaitFor(zero) after the base is known: %v", err)
	}
	r := hubSubscribe(t, h, &base, "posts")
	// The first transaction follows the base: no discontinuity.
	h.Apply(base, brokertest.Tx(0x1100, "posts/create/1").Events)
	if got := positionsOf(r.Events()); got != "[0/1100:1]" || r.Resyncs() != 0 {
		t.Fatalf("got %s with %d resyncs, want [0/1100:1] and none", got, r.Resyncs())
	}
}

func TestHubApplyWithMismatchingPrevResetsThenApplies(t *testing.T) {
	h := broker.NewHub(broker.HubConfig{HistorySize: 16})
	defer h.Close()
	// A hub without a position takes any prev: nothing to compare.
	h.Apply(pos(50, 0), brokertest.Tx(100, "posts/create/1").Events)
	h.Apply(pos(100, 1), brokertest.Tx(200, "posts/create/2").Events)
	r := hubSubscribe(t, h, nil, "posts")
	h.Apply(pos(200, 1), brokertest.Tx(300, "posts/create/3").Events)
	if got := positionsOf(r.Events()); got != "[0/12C:1]" || r.Resyncs() != 0 {
		t.Fatalf("continuous stream: got %s, %d resyncs", got, r.Resyncs())
	}

	// 0/190:1 follows 0/15E:1, which this hub never saw (lost entries).
	gap := pos(350, 1)
	h.Apply(gap, brokertest.Tx(400, "posts/create/4", "posts/create/5").Events)
	if r.Resyncs() != 1 {
		t.Fatalf("Resync called %d times, want 1", r.Resyncs())
	}
	if got := positionsOf(r.Events()); got != "[0/12C:1]" {
		t.Fatalf("the resynced member got %s: the transaction after the gap must not reach it", got)
	}
	if got := h.Position(); got != pos(400, 2) {
		t.Fatalf("Position = %s, want 0/190:2 (the transaction was applied after the reset)", got)
	}
	old := pos(300, 1)
	if _, err := h.Subscribe(hubCtx(t), brokertest.NewRecorder(), hubPats(t, "posts"), &old); !errors.Is(err, broker.ErrHistoryUnavailable) {
		t.Fatalf("since across the gap: err = %v, want ErrHistoryUnavailable", err)
	}
	r2 := hubSubscribe(t, h, &gap, "posts")
	if got := positionsOf(r2.Events()); got != "[0/190:1 0/190:2]" {
		t.Fatalf("since at the new base replayed %s, want [0/190:1 0/190:2]", got)
	}
}

func TestHubApplyIgnoresTransactionsAtOrBeforeItsPosition(t *testing.T) {
	h := broker.NewHub(broker.HubConfig{HistorySize: 16})
	defer h.Close()
	r := hubSubscribe(t, h, nil, "posts")
	h.Apply(broker.Position{}, brokertest.Tx(100, "posts/create/1").Events)
	h.Apply(pos(100, 1), brokertest.Tx(200, "posts/create/2", "posts/create/3").Events)
	// Read again (a follower re-reading, a replayed WAL transaction),
	// with any prev: neither delivered again nor a discontinuity.
	h.Apply(pos(100, 1), brokertest.Tx(200, "posts/create/2", "posts/create/3").Events)
	h.Apply(pos(7, 7), brokertest.Tx(100, "posts/create/1").Events)
	if got := positionsOf(r.Events()); got != "[0/64:1 0/C8:1 0/C8:2]" || r.Resyncs() != 0 {
		t.Fatalf("got %s with %d resyncs, want [0/64:1 0/C8:1 0/C8:2] and none", got, r.Resyncs())
	}
	if got := h.Position(); got != pos(200, 2) {
		t.Fatalf("Position = %s, want 0/C8:2", got)
	}
}

func TestHubPositionAdvancesOverDroppedEvents(t *testing.T) {
	h := broker.NewHub(broker.HubConfig{HistorySize: 16, Prepare: func(ev *broker.Event) bool { return ev.Collection != "secret" }})
	defer h.Close()
	r := hubSubscribe(t, h, nil, "*")
	h.Apply(broker.Position{}, brokertest.Tx(100, "posts/create/1", "secret/create/1").Events)
	if got := h.Position(); got != pos(100, 2) {
		t.Fatalf("Position = %s, want 0/64:2 (the dropped event's)", got)
	}
	// A transaction of dropped events only moves the position too.
	h.Apply(pos(100, 2), brokertest.Tx(200, "secret/create/2").Events)
	if got := h.Position(); got != pos(200, 1) {
		t.Fatalf("Position = %s, want 0/C8:1", got)
	}
	// The next entry names the dropped event as its predecessor: that is
	// continuity, not a gap.
	h.Apply(pos(200, 1), brokertest.Tx(300, "posts/create/3").Events)
	if got := positionsOf(r.Events()); got != "[0/64:1 0/12C:1]" || r.Resyncs() != 0 {
		t.Fatalf("got %s with %d resyncs, want [0/64:1 0/12C:1] and none", got, r.Resyncs())
	}
}

func TestHubApplyLiveAndClose(t *testing.T) {
	h := broker.NewHub(broker.HubConfig{HistorySize: 4})
	r := hubSubscribe(t, h, nil, "chat")
	h.ApplyLive(&broker.Event{Kind: broker.KindCustom, Collection: "chat", Name: "hi", Timestamp: time.Now()})
	if evs := r.Events(); len(evs) != 1 || !evs[0].Position.IsZero() || len(evs[0].JSON) == 0 {
		t.Fatalf("live event: %v", evs)
	}
	if !h.Position().IsZero() {
		t.Fatalf("a live event moved the position to %s", h.Position())
	}
	h.Close()
	if _, err := h.Subscribe(hubCtx(t), brokertest.NewRecorder(), hubPats(t, "chat"), nil); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
	if err := h.WaitFor(hubCtx(t), pos(1, 1)); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("WaitFor after Close: %v", err)
	}
}

// A prev at or before the hub's position is continuous: the hub has every
// event up to its position (a feed names an earlier base after its store
// lost entries this hub had applied already). Only a prev after the
// position is a gap.
func TestHubApplyWithEarlierPrevIsContinuous(t *testing.T) {
	h := broker.NewHub(broker.HubConfig{HistorySize: 16})
	defer h.Close()
	h.Apply(pos(50, 0), brokertest.Tx(100, "posts/create/1").Events)
	h.Apply(pos(100, 1), brokertest.Tx(200, "posts/create/2").Events)
	r := hubSubscribe(t, h, nil, "posts")
	h.Apply(pos(150, 0), brokertest.Tx(300, "posts/create/3").Events) // a base before 0/C8:1
	h.Apply(pos(300, 1), brokertest.Tx(400, "posts/create/4").Events)
	if got := positionsOf(r.Events()); got != "[0/12C:1 0/190:1]" || r.Resyncs() != 0 {
		t.Fatalf("got %s, %d resyncs; want both transactions and no resync", got, r.Resyncs())
	}
	since := pos(100, 1)
	r2 := hubSubscribe(t, h, &since, "posts")
	if got := positionsOf(r2.Events()); got != "[0/C8:1 0/12C:1 0/190:1]" {
		t.Fatalf("since 0/64:1 replayed %s", got)
	}
}

// Advance moves the position without an event: a hub without a position
// takes it as its base (a new cluster's first position), WaitFor returns,
// a later transaction whose prev is at or before it is continuous, and an
// Advance backwards changes nothing.
func TestHubAdvance(t *testing.T) {
	h := broker.NewHub(broker.HubConfig{HistorySize: 16})
	defer h.Close()
	waited := make(chan error, 1)
	go func() { waited <- h.WaitFor(hubCtx(t), pos(500, 0)) }()
	h.Advance(pos(500, 0))
	if err := <-waited; err != nil {
		t.Fatalf("WaitFor(0/1F4:0) after Advance: %v", err)
	}
	if got := h.Position(); got != pos(500, 0) {
		t.Fatalf("Position = %s, want 0/1F4:0", got)
	}
	before := pos(400, 1)
	if _, err := h.Subscribe(hubCtx(t), brokertest.NewRecorder(), hubPats(t, "posts"), &before); !errors.Is(err, broker.ErrHistoryUnavailable) {
		t.Fatalf("since before the first base: err = %v, want ErrHistoryUnavailable", err)
	}
	at := pos(500, 0)
	r := hubSubscribe(t, h, &at, "posts")
	h.Advance(pos(450, 0)) // backwards: ignored
	h.Apply(pos(480, 0), brokertest.Tx(600, "posts/create/1").Events)
	if got := positionsOf(r.Events()); got != "[0/258:1]" || r.Resyncs() != 0 {
		t.Fatalf("got %s, %d resyncs; want 0/258:1 and no resync", got, r.Resyncs())
	}
	h.Advance(pos(700, 0))
	h.Apply(pos(600, 1), brokertest.Tx(800, "posts/create/2").Events)
	if got := positionsOf(r.Events()); got != "[0/258:1 0/320:1]" || r.Resyncs() != 0 {
		t.Fatalf("after Advance past the last event: got %s, %d resyncs", got, r.Resyncs())
	}
}
