package redisbroker

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/redistest"
)

// benchRowTx is a transaction of n rows shaped like pgrealtime-bench's
// table (id bigint, v int, note text) with its column types.
func benchRowTx(lsn uint64, n int) *broker.Tx {
	t := &broker.Tx{CommitLSN: lsn, EndLSN: lsn + 8, CommitTime: time.Unix(1700000000, 0).UTC()}
	types := []broker.ColumnType{{Name: "id", Type: "int8", Key: true}, {Name: "v", Type: "int4"}, {Name: "note", Type: "text"}}
	for i := 1; i <= n; i++ {
		id := int64(lsn)*10000 + int64(i)
		t.Events = append(t.Events, &broker.Event{
			Kind: broker.KindRecord, Collection: "bench", Action: broker.ActionCreate, RecordID: fmt.Sprint(id),
			Record:      broker.Row{{Name: "id", Value: id}, {Name: "v", Value: int64(i)}, {Name: "note", Value: "row number " + fmt.Sprint(i) + " of the catch-up backlog"}},
			ColumnTypes: types, Timestamp: t.CommitTime, Position: broker.Position{LSN: lsn, Index: uint32(i)},
		})
	}
	return t
}

// BenchmarkFollowerCatchUp measures a follower draining a backlog through
// XREAD (the cluster catch-up's follower side, without the hub's Prepare
// and Encode): b.N events in 1 000-event transactions are appended by a
// leader while the follower's loop is held before its first XREAD; the
// time runs from its release until it has applied the last event.
// -benchmem counts what the follower allocates (the leader is idle then).
func BenchmarkFollowerCatchUp(b *testing.B) {
	srv := redistest.Start(b, redistest.Options{})
	const perTx = 1000
	ntx := (b.N + perTx - 1) / perTx
	hist := max(10000, ntx*perTx+perTx)
	leader := startNode(b, srv, hist)
	gate := make(chan struct{})
	follower := startNode(b, srv, hist, heldUntil(gate))
	ctx := context.Background()
	if err := leader.b.Begin(ctx, broker.Position{LSN: 900}); err != nil {
		b.Fatal(err)
	}
	var last *broker.Tx
	for i := 0; i < ntx; i++ {
		last = benchRowTx(1000+uint64(100*i), min(perTx, b.N-i*perTx))
		if err := leader.b.Append(ctx, last); err != nil {
			b.Fatal(err)
		}
	}
	waitUntil(b, "the leader confirmed every append", func() (bool, string) {
		d, err := leader.b.Durable(last.EndLSN)
		return err == nil && d == last.EndLSN, fmt.Sprintf("durable %d, %v", d, err)
	})
	b.ReportAllocs()
	b.ResetTimer()
	close(gate)
	follower.rec.waitPos(b, last.Events[len(last.Events)-1].Position)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
