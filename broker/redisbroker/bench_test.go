package redisbroker

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/redistest"
)

// BenchmarkAppend measures the leader's append throughput: b.N events in
// transactions of eventsPerTx, appended as fast as Append takes them, until
// Durable confirms the last (the leader's own follower loop runs too, as
// on a real node).
func BenchmarkAppend(b *testing.B) {
	for _, perTx := range []int{1, 10} {
		b.Run(map[int]string{1: "1-event-tx", 10: "10-event-tx"}[perTx], func(b *testing.B) {
			srv := redistest.Start(b, redistest.Options{})
			n := startNode(b, srv, 100000)
			ctx := context.Background()
			if err := n.b.Begin(ctx, broker.Position{LSN: 900}); err != nil {
				b.Fatal(err)
			}
			txs := make([]*broker.Tx, 0, b.N/perTx+1)
			for i := 0; i < b.N; i += perTx {
				txs = append(txs, tx(1000+uint64(100*len(txs)), min(perTx, b.N-i)))
			}
			end := txs[len(txs)-1].EndLSN
			b.ResetTimer()
			for _, t := range txs {
				if err := n.b.Append(ctx, t); err != nil {
					b.Fatal(err)
				}
			}
			for {
				d, err := n.b.Durable(end)
				if err != nil {
					b.Fatal(err)
				}
				if d == end {
					break
				}
				time.Sleep(100 * time.Microsecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}

// BenchmarkEndToEndLatency measures, at 1 000 one-event transactions a
// second, the time from Append on the leader to Apply on another node
// (Redis on loopback): p50 and p99 over b.N transactions.
func BenchmarkEndToEndLatency(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	leader, follower := startNode(b, srv, 100000), startNode(b, srv, 100000)
	ctx := context.Background()
	if err := leader.b.Begin(ctx, broker.Position{LSN: 900}); err != nil {
		b.Fatal(err)
	}
	txs := make([]*broker.Tx, b.N)
	sent := make([]time.Time, b.N)
	lat := make([]time.Duration, 0, b.N)
	var mu sync.Mutex
	for i := range txs {
		txs[i] = tx(1000+uint64(100*i), 1)
	}
	follower.rec.mu.Lock()
	follower.rec.onApply = func(evs []*broker.Event) {
		now := time.Now()
		i := int((evs[0].Position.LSN - 1000) / 100)
		mu.Lock()
		lat = append(lat, now.Sub(sent[i]))
		mu.Unlock()
	}
	follower.rec.mu.Unlock()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	b.ResetTimer()
	for i, t := range txs {
		<-tick.C
		mu.Lock()
		sent[i] = time.Now()
		mu.Unlock()
		if err := leader.b.Append(ctx, t); err != nil {
			b.Fatal(err)
		}
		if i%200 == 0 {
			if _, err := leader.b.Durable(t.CommitLSN); err != nil {
				b.Fatal(err)
			}
		}
	}
	follower.rec.waitPos(b, txs[len(txs)-1].Events[0].Position)
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op")
}
