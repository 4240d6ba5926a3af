package broker

import (
	"strconv"
	"testing"
	"time"
)

// BenchmarkHubApply applies 1 000-event transactions of bench-shaped rows
// to a hub that retains them, without members (a cluster leader whose
// clients are on other nodes) and with one subscriber of the collection.
// ns/op and allocs/op are per event.
func BenchmarkHubApply(b *testing.B) {
	const perTx = 1000
	for _, members := range []int{0, 1} {
		b.Run(map[int]string{0: "no-members", 1: "one-member"}[members], func(b *testing.B) {
			h := NewHub(HubConfig{HistorySize: b.N + perTx})
			defer h.Close()
			if members > 0 {
				if _, err := h.Subscribe(b.Context(), newCounter(), []Pattern{{Collection: "bench"}}, nil); err != nil {
					b.Fatal(err)
				}
			}
			ts := time.Date(2026, 11, 25, 19, 44, 50, 0, time.UTC)
			types := []ColumnType{{"id", "int8", true}, {"v", "int4", false}, {"note", "text", false}}
			var txs [][]*Event
			for i := 0; i < b.N; i += perTx {
				lsn := uint64(1000 + i)
				var evs []*Event
				for j := 1; j <= min(perTx, b.N-i); j++ {
					id := int64(i + j)
					evs = append(evs, &Event{Kind: KindRecord, Collection: "bench", Action: ActionCreate, RecordID: strconv.FormatInt(id, 10),
						Record:      Row{{"id", id}, {"v", int64(j)}, {"note", "row number " + strconv.Itoa(j) + " of the catch-up backlog"}},
						ColumnTypes: types, Timestamp: ts, Position: Position{LSN: lsn, Index: uint32(j)}})
				}
				txs = append(txs, evs)
			}
			b.ReportAllocs()
			b.ResetTimer()
			prev := Position{}
			for _, evs := range txs {
				h.Apply(prev, evs)
				prev = evs[len(evs)-1].Position
			}
		})
	}
}
