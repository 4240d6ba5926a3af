package broker

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkFilterMatch routes one event among 10 000 filtered
// subscriptions of one collection (one connection each):
//   - eq: each filters user_id=eq.<its own id>, the event matches one of
//     them. The eq index makes this cost about what one subscriber costs.
//   - gt: each filters total=gt.<n>; the event's total exceeds half of the
//     thresholds, or none. Range filters are not indexed: every one is
//     evaluated (the cost is reported, not bound).
func BenchmarkFilterMatch(b *testing.B) {
	const subs = 10000
	cases := []struct {
		name   string
		filter func(i int) string
		event  func(i int) Row
		hits   int
	}{
		{"eq_text", func(i int) string { return fmt.Sprintf("user_id=eq.u%d", i) },
			func(i int) Row {
				return Row{{"id", int64(i)}, {"user_id", fmt.Sprintf("u%d", i*97%subs)}, {"total", int64(5)}}
			}, 1},
		{"eq_number", func(i int) string { return fmt.Sprintf("user_id=eq.%d", i) },
			func(i int) Row { return Row{{"id", int64(i)}, {"user_id", int64(i * 97 % subs)}, {"total", int64(5)}} }, 1},
		{"gt_half_match", func(i int) string { return fmt.Sprintf("total=gt.%d", i) },
			func(i int) Row { return Row{{"id", int64(i)}, {"user_id", "u1"}, {"total", int64(subs / 2)}} }, subs / 2},
		{"gt_none_match", func(i int) string { return fmt.Sprintf("total=gt.%d", i) },
			func(i int) Row { return Row{{"id", int64(i)}, {"user_id", "u1"}, {"total", int64(-1)}} }, 0},
	}
	for _, c := range cases {
		b.Run(fmt.Sprintf("%s/subscriptions=%d", c.name, subs), func(b *testing.B) {
			m := NewMemory(Config{})
			ctx := context.Background()
			cs := make([]*counter, subs)
			for i := range cs {
				p, err := ParsePattern("posts.*?" + c.filter(i))
				if err != nil {
					b.Fatal(err)
				}
				cs[i] = newCounter()
				m.Subscribe(ctx, cs[i], []Pattern{p}, nil)
			}
			evs := make([]*Event, 1024)
			for i := range evs {
				evs[i] = &Event{Kind: KindRecord, Collection: "posts", Action: ActionUpdate, RecordID: fmt.Sprint(i), Record: c.event(i), JSON: []byte("{}")}
			}
			// Check the expected number of deliveries once.
			m.mu.Lock()
			m.fanoutLocked(evs[1])
			m.mu.Unlock()
			got := 0
			for _, s := range cs {
				got += int(s.n.Swap(0))
			}
			if got != c.hits {
				b.Fatalf("one event reached %d subscribers, want %d", got, c.hits)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m.mu.Lock()
				m.fanoutLocked(evs[i%len(evs)])
				m.mu.Unlock()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/event")
		})
	}
}
