package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"strings"
	"testing"
)

// recorder counts deliveries per event (by RecordID).
type recorder struct{ got map[string]int }

func (r *recorder) Deliver(ev *Event) { r.got[ev.RecordID]++ }
func (r *recorder) DeliverBatch(evs []*Event) {
	for _, ev := range evs {
		r.Deliver(ev)
	}
}
func (r *recorder) Resync() {}

// TestFilterIndexAgreesWithMatch: whatever the filters, the indexes
// deliver exactly the events Filters.Match accepts (once per subscriber,
// however many of its patterns match), for single events and transaction
// batches, before and after unsubscribing some patterns.
func TestFilterIndexAgreesWithMatch(t *testing.T) {
	rng := rand.New(rand.NewSource(13))
	cols := []string{"a", "b", "c"}
	lits := []string{"-1", "0", "1", "1.0", "2", "10", "x", "y", "", `"1,2"`}
	ops := []string{"eq", "neq", "lt", "lte", "gt", "gte", "in", "is"}
	values := []any{int64(-1), int64(0), int64(1), int64(2), int64(10), 1.0, 0.5, json.Number("1.00"), json.Number("10"), "1", "x", "y", "", "1,2", nil, true, false}
	randFilter := func() string {
		var fs []string
		for n := 1 + rng.Intn(3); n > 0; n-- {
			col, op := cols[rng.Intn(len(cols))], ops[rng.Intn(len(ops))]
			switch op {
			case "in":
				var vs []string
				for k := 1 + rng.Intn(3); k > 0; k-- {
					l := lits[rng.Intn(len(lits))]
					if l == "" {
						l = `""`
					}
					vs = append(vs, l)
				}
				fs = append(fs, col+"=in.("+strings.Join(vs, ",")+")")
			case "is":
				fs = append(fs, col+"=is."+[]string{"null", "true", "false"}[rng.Intn(3)])
			default:
				l := lits[rng.Intn(len(lits))]
				if strings.HasPrefix(l, `"`) {
					l = "1,2"
				}
				fs = append(fs, col+"="+op+"."+l)
			}
		}
		return strings.Join(fs, "&")
	}
	m := NewMemory(Config{})
	ctx := context.Background()
	type sub struct {
		r    *recorder
		pats []Pattern
	}
	subs := make([]*sub, 300)
	for i := range subs {
		s := &sub{r: &recorder{got: map[string]int{}}}
		for k := 1 + rng.Intn(3); k > 0; k-- {
			topic := "posts?" + randFilter()
			if rng.Intn(5) == 0 {
				topic = "posts.7?" + randFilter()
			}
			p, err := ParsePattern(topic)
			if err != nil {
				t.Fatalf("%s: %v", topic, err)
			}
			s.pats = append(s.pats, p)
		}
		if _, err := m.Subscribe(ctx, s.r, s.pats, nil); err != nil {
			t.Fatal(err)
		}
		subs[i] = s
	}
	var lsn uint64
	check := func(round string) {
		var evs []*Event
		for i := 0; i < 400; i++ {
			var row Row
			for _, c := range cols {
				if rng.Intn(6) > 0 {
					row = append(row, Column{c, values[rng.Intn(len(values))]})
				}
			}
			id := fmt.Sprint(i)
			if i%10 == 0 {
				id = "7"
			}
			ev := &Event{Kind: KindRecord, Collection: "posts", Action: ActionUpdate, RecordID: id + "/" + fmt.Sprint(i), Record: row}
			if i%10 == 0 {
				ev.RecordID = "7"
			}
			evs = append(evs, ev)
		}
		for i := 0; i < len(evs); {
			n := 1 + rng.Intn(3) // transactions of 1 to 3 events
			lsn++
			tx := &Tx{CommitLSN: lsn}
			for ; n > 0 && i < len(evs); n, i = n-1, i+1 {
				evs[i].Position = Position{LSN: lsn, Index: uint32(len(tx.Events) + 1)}
				tx.Events = append(tx.Events, evs[i])
			}
			if err := m.Append(ctx, tx); err != nil {
				t.Fatal(err)
			}
		}
		total := 0
		for si, s := range subs {
			want := map[string]int{}
			for _, ev := range evs {
				for _, p := range s.pats {
					if (p.ID == "" || p.ID == ev.RecordID) && p.Filters.Match(ev) {
						want[ev.RecordID]++
						break
					}
				}
			}
			if fmt.Sprint(s.r.got) != fmt.Sprint(want) {
				t.Fatalf("%s: subscriber %d (%v) got %v, want %v", round, si, s.pats, s.r.got, want)
			}
			s.r.got = map[string]int{}
			total += len(want)
		}
		if total < len(subs) || total > len(subs)*len(evs)/2 {
			t.Fatalf("%s: %d deliveries in all: the random filters are too strict or too loose to test anything", round, total)
		}
		t.Logf("%s: %d deliveries to %d subscribers of %d events", round, total, len(subs), len(evs))
	}
	check("all patterns")
	for _, s := range subs {
		if len(s.pats) > 1 {
			m.Unsubscribe(s.r, s.pats[:1])
			s.pats = s.pats[1:]
		}
	}
	check("after unsubscribing")
}
