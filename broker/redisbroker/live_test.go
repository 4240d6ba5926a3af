package redisbroker

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/redistest"
)

func liveEvent(name string) *broker.Event {
	return &broker.Event{Kind: broker.KindCustom, Collection: "chat", Name: name, Data: json.RawMessage(`{"x":1}`), Timestamp: time.Unix(1700000000, 0).UTC()}
}

// waitLive waits until the recorder has received the live event named
// last and returns the names received.
func waitLive(t *testing.T, n *node, last string) []string {
	t.Helper()
	n.rec.wait(t, "live event "+last, func(r *recorder) bool {
		return len(r.lives) > 0 && r.lives[len(r.lives)-1].Name == last
	})
	n.rec.mu.Lock()
	defer n.rec.mu.Unlock()
	var names []string
	for _, ev := range n.rec.lives {
		names = append(names, ev.Name)
	}
	return names
}

// TestLiveEventsReachEveryNodeOnce: a live event published by one node
// reaches every node, the sender included, once; after Redis restarts the
// subscriptions come back.
func TestLiveEventsReachEveryNodeOnce(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a, b := startNode(t, srv, 100), startNode(t, srv, 100)
	ctx := context.Background()
	for _, name := range []string{"hello", "barrier"} {
		if err := a.b.PublishLive(ctx, liveEvent(name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []*node{a, b} {
		if got := waitLive(t, n, "barrier"); len(got) != 2 || got[0] != "hello" {
			t.Fatalf("live events %q, want [hello barrier]", got)
		}
		n.rec.mu.Lock()
		ev := n.rec.lives[0]
		n.rec.mu.Unlock()
		if string(ev.Data) != `{"x":1}` || ev.Collection != "chat" || !ev.Position.IsZero() {
			t.Fatalf("live event %+v", ev)
		}
	}
	srv.Kill()
	waitUntil(t, "both live subscriptions are down", func() (bool, string) {
		for _, n := range []*node{a, b} {
			n.b.mu.Lock()
			down := n.b.liveReason != ""
			n.b.mu.Unlock()
			if !down {
				return false, "subscribed"
			}
		}
		return true, ""
	})
	srv.Restart()
	a.waitReady(t)
	b.waitReady(t)
	// The client's pipelined connection broke too: its next write fails
	// once (rueidis retries only read-only commands). Wait until it is back.
	waitUntil(t, "b's client answers", func() (bool, string) {
		err := b.c.Do(ctx, b.c.B().Ping().Build()).Error()
		return err == nil, fmt.Sprint(err)
	})
	if err := b.b.PublishLive(ctx, liveEvent("again")); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{a, b} {
		if got := waitLive(t, n, "again"); len(got) != 3 {
			t.Fatalf("live events %q, want [hello barrier again]", got)
		}
	}
}

// TestRunEndsWithItsContextWhileRedisIsPaused: a node stops promptly even
// when Redis does not answer.
func TestRunEndsWithItsContextWhileRedisIsPaused(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	rec := newRecorder()
	b, err := newBroker(Config{Client: newClient(t, srv), Slot: testSlot, HistorySize: 10}, rec)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = b.Run(ctx) }()
	(&node{b: b}).waitReady(t)
	srv.Pause()
	defer srv.Resume()
	start := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("Run did not return")
	}
	t.Logf("Run returned %s after its ctx ended", time.Since(start))
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Run took %s to return with Redis paused", d)
	}
	if err := b.Ready(); err == nil || err.Error() != "stopped" {
		t.Fatalf("Ready after Run = %v, want stopped", err)
	}
}
