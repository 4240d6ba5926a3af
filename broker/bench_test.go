package broker

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// counter is a Subscriber that only counts, like a socket whose queue
// push is a non-blocking channel send.
type counter struct {
	n  atomic.Int64
	ch chan []byte
}

func (c *counter) Deliver(ev *Event) {
	c.n.Add(1)
	select {
	case c.ch <- ev.JSON:
	default:
		<-c.ch // keep the benchmark's queue from filling up
		c.ch <- ev.JSON
	}
}
func (c *counter) DeliverBatch(evs []*Event) {}
func (c *counter) Resync()                   {}

func newCounter() *counter { return &counter{ch: make(chan []byte, 4)} }

// BenchmarkMatch measures routing one event among 100 000 subscriptions
// (100 000 connections, each on its own record id, plus 10 on the whole
// collection): the cost must not depend on the number of subscribers.
func BenchmarkMatch(b *testing.B) {
	for _, subs := range []int{1000, 100000} {
		b.Run(fmt.Sprintf("subscriptions=%d", subs), func(b *testing.B) {
			m := NewMemory(Config{})
			ctx := context.Background()
			for i := 0; i < subs; i++ {
				m.Subscribe(ctx, newCounter(), []Pattern{{Collection: "posts", ID: fmt.Sprint(i)}}, nil)
			}
			for i := 0; i < 10; i++ {
				m.Subscribe(ctx, newCounter(), []Pattern{{Collection: "posts"}}, nil)
			}
			evs := make([]*Event, 1024)
			for i := range evs {
				evs[i] = &Event{Kind: KindRecord, Collection: "posts", Action: ActionUpdate, RecordID: fmt.Sprint(i * 97 % subs), JSON: []byte("{}")}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m.hub.mu.Lock()
				m.hub.fanoutLocked(evs[i%len(evs)])
				m.hub.mu.Unlock()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/event")
		})
	}
}

// BenchmarkFanout publishes one event (a one-event transaction, encoded once)
// to 10 000 subscribers of the same topic.
func BenchmarkFanout(b *testing.B) {
	const subs = 10000
	m := NewMemory(Config{HistorySize: DefaultHistorySize})
	ctx := context.Background()
	cs := make([]*counter, subs)
	for i := range cs {
		cs[i] = newCounter()
		m.Subscribe(ctx, cs[i], []Pattern{{Collection: "posts"}}, nil)
	}
	commit := time.Now()
	txs := make([]*Tx, b.N)
	for i := range txs {
		lsn := uint64(i + 1)
		txs[i] = &Tx{CommitLSN: lsn, EndLSN: lsn, CommitTime: commit, Events: []*Event{{
			Kind: KindRecord, Collection: "posts", Action: ActionCreate, RecordID: "1",
			Record:    Row{{"id", int64(1)}, {"title", "hello"}, {"published", true}},
			Timestamp: commit, Position: Position{LSN: lsn, Index: 1},
		}}}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := m.Append(ctx, txs[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if got := cs[subs-1].n.Load(); got != int64(b.N) {
		b.Fatalf("last subscriber got %d events, want %d", got, b.N)
	}
	b.ReportMetric(float64(b.N*subs)/b.Elapsed().Seconds(), "deliveries/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*subs), "ns/delivery")
}

// BenchmarkEncode encodes a 3-column insert event (the write-overhead
// benchmark's row).
func BenchmarkEncode(b *testing.B) {
	ev := &Event{
		Kind: KindRecord, Collection: "bench", Action: ActionCreate, RecordID: "1234567",
		Record:    Row{{Name: "id", Value: int64(1234567)}, {Name: "v", Value: int64(7654321)}, {Name: "note", Value: "live row"}},
		Timestamp: time.Date(2026, 11, 25, 22, 0, 0, 123456000, time.UTC),
		Position:  Position{LSN: 0x16B3748, Index: 1},
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ev.Encode(); err != nil {
			b.Fatal(err)
		}
	}
}
