package redisbroker

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/broker/brokertest"
	"github.com/pgrealtime/pgrealtime/internal/redistest"
)

func newHubNode(t *testing.T, srv *redistest.Server) *Broker {
	t.Helper()
	b, err := New(Config{Client: newClient(t, srv), Slot: testSlot, HistorySize: 100,
		Logger: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if err != nil {
		t.Fatal(err)
	}
	startHubNode(t, b)
	return b
}

func subscribe(t *testing.T, b *Broker, since *broker.Position, topic string) (*brokertest.Recorder, error) {
	t.Helper()
	p, err := broker.ParsePattern(topic)
	if err != nil {
		t.Fatal(err)
	}
	r := brokertest.NewRecorder()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, err = b.Subscribe(ctx, r, []broker.Pattern{p}, since)
	return r, err
}

// TestNodesAcrossRedisDataLoss, with broker.Hub on two nodes: subscribers
// on both get the same events with the same positions, and a live event
// once; when Redis comes back empty every subscriber gets Resync, a resume
// from before the loss is history_unavailable and one from the base
// replays exactly what followed.
func TestNodesAcrossRedisDataLoss(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a, b := newHubNode(t, srv), newHubNode(t, srv)
	var recs []*brokertest.Recorder
	for _, n := range []*Broker{a, b} {
		r, err := subscribe(t, n, nil, "posts")
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	before, after := txRange(1000, 5), txRange(5000, 3)
	rd := newReader(a, 900)
	rd.publish(t, before...)
	want := txPositions(before...)
	for i, r := range recs {
		if got := posList(r.WaitN(t, len(want))); !slices.Equal(got, want) {
			t.Fatalf("node %d delivered %v, want %v", i, got, want)
		}
	}
	// A live event reaches both nodes' subscribers once.
	live := make([]*brokertest.Recorder, 2)
	for i, n := range []*Broker{a, b} {
		r, err := subscribe(t, n, nil, "chat")
		if err != nil {
			t.Fatal(err)
		}
		live[i] = r
	}
	if err := a.PublishLive(context.Background(), liveEvent("hello")); err != nil {
		t.Fatal(err)
	}
	for i, n := range []*Broker{a, b} {
		brokertest.Barrier(t, n, live[i])
		if evs := live[i].Events(); len(evs) != 1 || evs[0].Name != "hello" {
			t.Fatalf("node %d: live events %v, want hello once", i, evs)
		}
	}

	lastBefore, base := want[len(want)-1], broker.Position{LSN: rd.acked}
	srv.RestartEmpty()
	rd.publish(t, after...)
	for i, r := range recs {
		waitUntil(t, "the subscriber is told to resync", func() (bool, string) { return r.Resyncs() == 1, "no Resync" })
		if got := posList(r.Events()); !slices.Equal(got, want) {
			t.Fatalf("node %d delivered %v after the loss to a removed subscriber, want only %v", i, got, want)
		}
	}
	wantAfter := txPositions(after...)
	for i, n := range []*Broker{a, b} {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		err := n.WaitFor(ctx, wantAfter[len(wantAfter)-1])
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := subscribe(t, n, &lastBefore, "posts"); !errors.Is(err, broker.ErrHistoryUnavailable) {
			t.Fatalf("node %d: resume from %s, before the loss: %v, want ErrHistoryUnavailable", i, lastBefore, err)
		}
		r, err := subscribe(t, n, &base, "posts")
		if err != nil {
			t.Fatalf("node %d: resume from the base %s: %v", i, base, err)
		}
		if got := posList(r.WaitN(t, len(wantAfter))); !slices.Equal(got, wantAfter) {
			t.Fatalf("node %d: resume from the base replayed %v, want %v", i, got, wantAfter)
		}
	}
}
