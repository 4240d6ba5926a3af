package brokertest

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
)

// Recorder is a broker.Subscriber that records what it receives, except the
// sentinel events of Barrier.
type Recorder struct {
	mu        sync.Mutex
	events    []*broker.Event
	units     []int // events per Deliver/DeliverBatch call, in order
	sentinels map[string]bool
	resyncs   int
	cond      chan struct{}
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{cond: make(chan struct{}), sentinels: map[string]bool{}}
}

// Deliver implements broker.Subscriber.
func (r *Recorder) Deliver(ev *broker.Event) { r.add(ev) }

// Units returns how many events each Deliver or DeliverBatch call carried.
func (r *Recorder) Units() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int(nil), r.units...)
}

// DeliverBatch implements broker.Subscriber.
func (r *Recorder) DeliverBatch(evs []*broker.Event) { r.add(evs...) }

// Resync implements broker.Subscriber: it counts the calls.
func (r *Recorder) Resync() {
	r.mu.Lock()
	r.resyncs++
	close(r.cond)
	r.cond = make(chan struct{})
	r.mu.Unlock()
}

// Resyncs returns how many times Resync was called.
func (r *Recorder) Resyncs() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.resyncs
}

func (r *Recorder) add(evs ...*broker.Event) {
	r.mu.Lock()
	n := 0
	for _, ev := range evs {
		if ev.Collection == SentinelCollection {
			r.sentinels[ev.RecordID] = true
			continue
		}
		r.events = append(r.events, ev)
		n++
	}
	if n > 0 {
		r.units = append(r.units, n)
	}
	close(r.cond)
	r.cond = make(chan struct{})
	r.mu.Unlock()
}

// Events returns a copy of what was received so far.
func (r *Recorder) Events() []*broker.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*broker.Event(nil), r.events...)
}

// WaitN waits until at least n events were received, or fails the test.
func (r *Recorder) WaitN(t testing.TB, n int) []*broker.Event {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		if len(r.events) >= n {
			evs := append([]*broker.Event(nil), r.events...)
			r.mu.Unlock()
			return evs
		}
		ch := r.cond
		got := len(r.events)
		r.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for %d events, have %d", n, got)
		}
	}
}

// waitSentinel waits until the sentinel id was received, or fails the test.
func (r *Recorder) waitSentinel(t testing.TB, id string, deadline <-chan time.Time) {
	t.Helper()
	for {
		r.mu.Lock()
		seen, ch := r.sentinels[id], r.cond
		r.mu.Unlock()
		if seen {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("timed out waiting for the barrier's sentinel event %s", id)
		}
	}
}

// SentinelCollection is the collection of Barrier's sentinel events.
const SentinelCollection = "brokertest_barrier"

var barrierSeq atomic.Uint64

// Barrier returns once every event published to b before it was called
// has reached each of rs (as far as it is going to): it subscribes each of
// rs to SentinelCollection, publishes one live sentinel event there and
// waits until each of rs has it. Recorders do not record sentinels. It
// fails the test when a sentinel does not arrive within 10 s.
func Barrier(t testing.TB, b broker.Broker, rs ...*Recorder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sentinel := []broker.Pattern{{Collection: SentinelCollection}}
	for _, r := range rs {
		if _, err := b.Subscribe(ctx, r, sentinel, nil); err != nil {
			t.Fatalf("barrier: subscribe to %s: %v", SentinelCollection, err)
		}
	}
	id := strconv.FormatUint(barrierSeq.Add(1), 10)
	ev := &broker.Event{Kind: broker.KindCustom, Collection: SentinelCollection, Name: "barrier", RecordID: id, Timestamp: time.Now().UTC()}
	if err := b.PublishLive(ctx, ev); err != nil {
		t.Fatalf("barrier: publish the sentinel: %v", err)
	}
	deadline := time.After(10 * time.Second)
	for _, r := range rs {
		r.waitSentinel(t, id, deadline)
	}
}
