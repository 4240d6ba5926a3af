package brokertest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
)

// filterSuite holds the helpers of the column-filter contract tests.
type filterSuite struct {
	t   *testing.T
	b   broker.Broker
	lsn uint64
}

func (s *filterSuite) ctx() context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	s.t.Cleanup(cancel)
	return c
}

// recorder returns a Recorder subscribed to topics.
func (s *filterSuite) recorder(since *broker.Position, topics ...string) *Recorder {
	s.t.Helper()
	r := NewRecorder()
	s.subscribe(r, since, topics...)
	return r
}

func (s *filterSuite) subscribe(r *Recorder, since *broker.Position, topics ...string) {
	s.t.Helper()
	if _, err := s.b.Subscribe(s.ctx(), r, pats(s.t, topics...), since); err != nil {
		s.t.Fatalf("subscribe %v: %v", topics, err)
	}
}

// publish publishes one transaction of evs at the next LSN.
func (s *filterSuite) publish(evs ...*broker.Event) broker.Position {
	s.t.Helper()
	s.lsn += 100
	tx := &broker.Tx{CommitLSN: s.lsn, EndLSN: s.lsn + 8, CommitTime: time.Unix(1700000000, 0).UTC()}
	for i, ev := range evs {
		ev.Position = broker.Position{LSN: s.lsn, Index: uint32(i + 1)}
		ev.Timestamp = tx.CommitTime
		tx.Events = append(tx.Events, ev)
	}
	if err := Append(s.ctx(), s.b, tx); err != nil {
		s.t.Fatalf("append: %v", err)
	}
	return tx.Events[len(tx.Events)-1].Position
}

// settled waits on a Barrier and returns what each recorder received.
func (s *filterSuite) settled(rs ...*Recorder) [][]*broker.Event {
	s.t.Helper()
	Barrier(s.t, s.b, rs...)
	out := make([][]*broker.Event, len(rs))
	for i, r := range rs {
		out[i] = r.Events()
	}
	return out
}

func row(kv ...any) broker.Row {
	var r broker.Row
	for i := 0; i < len(kv); i += 2 {
		r = append(r, broker.Column{Name: kv[i].(string), Value: kv[i+1]})
	}
	return r
}

func recEvent(coll, action, id string, r broker.Row) *broker.Event {
	return &broker.Event{Kind: broker.KindRecord, Collection: coll, Action: action, RecordID: id, Record: r}
}

// names lists events as "action/id".
func names(evs []*broker.Event) string {
	var out []string
	for _, e := range evs {
		if e.Kind == broker.KindCustom {
			out = append(out, e.Name+"/"+e.RecordID)
			continue
		}
		out = append(out, e.Action+"/"+e.RecordID)
	}
	return strings.Join(out, " ")
}

// runFilters is the column-filter part of the contract (PROTOCOL section 2).
func runFilters(t *testing.T, newBroker NewBroker, applied func(*testing.T, broker.Broker)) {
	const historySize = 64
	suite := func(t *testing.T) *filterSuite { return &filterSuite{t: t, b: newBroker(t, historySize)} }

	t.Run("FiltersMatchNewRowOldKeyAndTruncate", func(t *testing.T) {
		s := suite(t)
		ann := s.recorder(nil, "posts?user_id=eq.ann")
		paid := s.recorder(nil, `posts.*?status=in.(paid,"shipped, late")&total=gt.100`)
		byID := s.recorder(nil, "posts?id=eq.2")
		nulls := s.recorder(nil, "posts?note=is.null")
		s.publish(
			recEvent("posts", broker.ActionCreate, "1", row("id", int64(1), "user_id", "ann", "status", "paid", "total", int64(150), "note", nil)),
			recEvent("posts", broker.ActionCreate, "2", row("id", int64(2), "user_id", "bob", "status", "shipped, late", "total", json.Number("100.01"), "note", "x")),
			recEvent("posts", broker.ActionCreate, "3", row("id", int64(3), "user_id", "bob", "status", "paid", "total", int64(100), "note", nil)),
		)
		s.publish(recEvent("posts", broker.ActionUpdate, "1", row("id", int64(1), "user_id", "bob", "status", "paid", "total", int64(99)))) // leaves ann's filter
		s.publish(recEvent("posts", broker.ActionUpdate, "3", row("id", int64(3), "user_id", "ann", "status", "shipped", "total", int64(500))))
		s.publish(recEvent("posts", broker.ActionDelete, "2", row("id", int64(2))))                      // only the key is logged
		s.publish(recEvent("comments", broker.ActionCreate, "9", row("id", int64(2), "user_id", "ann"))) // other collection
		s.publish(&broker.Event{Kind: broker.KindRecord, Collection: "posts", Action: broker.ActionTruncate})
		got := s.settled(ann, paid, byID, nulls)
		for i, want := range []string{
			"create/1 update/3 truncate/", // ann: the new row decides, not the old one
			"create/1 create/2 truncate/", // in + gt, numbers as numbers
			"create/2 delete/2 truncate/", // delete matches on the logged key
			"create/1 create/3 truncate/", // update/1's row has no note column: an absent column never matches
		} {
			if names(got[i]) != want {
				t.Errorf("subscriber %d got %q, want %q", i, names(got[i]), want)
			}
		}
	})

	t.Run("FilteredPatternsAreSeparateSubscriptionsDeliveredOnce", func(t *testing.T) {
		s := suite(t)
		r := s.recorder(nil, "posts?a=eq.1", "posts.*?a=eq.2", "posts?a=gte.1", "posts.5?a=eq.1")
		plain := s.recorder(nil, "posts", "posts?a=eq.1")
		s.publish(recEvent("posts", broker.ActionCreate, "5", row("a", int64(1))))
		s.publish(recEvent("posts", broker.ActionCreate, "6", row("a", int64(2))))
		s.publish(recEvent("posts", broker.ActionCreate, "7", row("a", int64(3))))
		applied(t, s.b)
		s.b.Unsubscribe(r, pats(t, "posts?a=eq.1", "posts?a=gte.1")) // posts.*?a=eq.2 and posts.5?a=eq.1 remain
		s.publish(recEvent("posts", broker.ActionCreate, "8", row("a", int64(1))))
		s.publish(recEvent("posts", broker.ActionCreate, "5", row("a", int64(1))))
		s.publish(recEvent("posts", broker.ActionCreate, "9", row("a", int64(2))))
		got := s.settled(r, plain)
		if want := "create/5 create/6 create/7 create/5 create/9"; names(got[0]) != want {
			t.Errorf("filtered subscriber got %q, want %q (once each, the unsubscribed filters gone)", names(got[0]), want)
		}
		if want := "create/5 create/6 create/7 create/8 create/5 create/9"; names(got[1]) != want {
			t.Errorf("plain + filtered subscriber got %q, want %q", names(got[1]), want)
		}
	})

	t.Run("TransactionBatchHoldsOnlyMatchingEvents", func(t *testing.T) {
		s := suite(t)
		r := NewRecorder()
		s.subscribe(r, nil, "posts?user_id=eq.ann")
		s.publish(
			recEvent("posts", broker.ActionCreate, "1", row("user_id", "ann")),
			recEvent("posts", broker.ActionCreate, "2", row("user_id", "bob")),
			recEvent("posts", broker.ActionCreate, "3", row("user_id", "ann")),
		)
		s.publish(recEvent("posts", broker.ActionCreate, "4", row("user_id", "ann")))
		evs := r.WaitN(t, 3)
		if names(evs) != "create/1 create/3 create/4" || fmt.Sprint(r.Units()) != "[2 1]" {
			t.Errorf("got %q in units %v, want create/1 create/3 as one batch, then create/4", names(evs), r.Units())
		}
	})

	t.Run("CustomEventsMatchOnData", func(t *testing.T) {
		s := suite(t)
		r := s.recorder(nil, "chat?user=eq.ann&n=gt.1")
		room := s.recorder(nil, "chat.room1?user=eq.ann")
		custom := func(id, data string) *broker.Event {
			ev := &broker.Event{Kind: broker.KindCustom, Collection: "chat", Name: "typing", RecordID: id, Timestamp: time.Now()}
			if data != "" {
				ev.Data = json.RawMessage(data)
			}
			return ev
		}
		for _, ev := range []*broker.Event{
			custom("room1", `{"user":"ann","n":2}`), custom("room2", `{"user":"ann","n":1}`),
			custom("room1", `{"user":"bob","n":5}`), custom("", `{"n":5.5,"user":"ann"}`),
			custom("room1", ""), custom("room1", `"ann"`),
		} {
			if err := s.b.PublishLive(s.ctx(), ev); err != nil {
				t.Fatal(err)
			}
		}
		// Live events and WAL events travel apart on an asynchronous broker
		// (Redis: pub/sub and the stream), so only the order within each
		// is guaranteed: let the live ones arrive before the WAL one.
		s.settled(r, room)
		s.publish(custom("room1", `{"user":"ann","n":3}`)) // through the WAL
		got := s.settled(r, room)
		if want := "typing/room1 typing/ typing/room1"; names(got[0]) != want {
			t.Errorf("data filter got %q, want %q", names(got[0]), want)
		}
		if want := "typing/room1 typing/room1"; names(got[1]) != want {
			t.Errorf("record pattern with filter got %q, want %q", names(got[1]), want)
		}
	})

	t.Run("ResumeHonoursFilters", func(t *testing.T) {
		s := suite(t)
		live := s.recorder(nil, "posts?user_id=eq.ann")
		start := s.publish(recEvent("posts", broker.ActionCreate, "0", row("user_id", "ann")))
		s.publish(recEvent("posts", broker.ActionCreate, "1", row("user_id", "ann")))
		s.publish(recEvent("posts", broker.ActionCreate, "2", row("user_id", "bob")))
		s.publish(recEvent("posts", broker.ActionUpdate, "2", row("user_id", "ann")))
		applied(t, s.b)
		// A fresh subscriber resumes with a filter: only matching events replay.
		fresh := s.recorder(&start, "posts?user_id=eq.ann")
		// The live subscriber widens to the whole collection from start:
		// only what its filtered pattern did not deliver is replayed.
		s.subscribe(live, &start, "posts")
		s.publish(recEvent("posts", broker.ActionCreate, "3", row("user_id", "bob")))
		got := s.settled(fresh, live)
		if want := "create/1 update/2"; names(got[0]) != want {
			t.Errorf("filtered resume replayed %q, want %q", names(got[0]), want)
		}
		if want := "create/0 create/1 update/2 create/2 create/3"; names(got[1]) != want {
			t.Errorf("widening resume gave %q, want %q (no duplicate, no gap)", names(got[1]), want)
		}
	})

	t.Run("EqIndexRoutesManySubscribers", func(t *testing.T) {
		s := suite(t)
		const n = 200
		rs := make([]*Recorder, n)
		for i := range rs {
			if i%2 == 0 {
				rs[i] = s.recorder(nil, fmt.Sprintf("posts?user_id=eq.%d", i))
			} else {
				rs[i] = s.recorder(nil, fmt.Sprintf("posts?user_id=in.(u%d,%d)&id=neq.0", i, i))
			}
		}
		for i := 0; i < n; i++ {
			var v any = int64(i)
			if i%4 == 1 {
				v = fmt.Sprintf("u%d", i) // text value, matched by the in-list's text
			}
			s.publish(recEvent("posts", broker.ActionUpdate, fmt.Sprint(i), row("id", int64(i+1), "user_id", v)))
		}
		got := s.settled(rs...)
		for i := range rs {
			if want := fmt.Sprintf("update/%d", i); names(got[i]) != want {
				t.Errorf("subscriber %d got %q, want %q", i, names(got[i]), want)
			}
		}
	})

	t.Run("RangeFiltersAtBoundaries", func(t *testing.T) {
		s := suite(t)
		topics := []string{
			"total=gt.10", "total=gte.10", "total=lt.10", "total=lte.10.0",
			"name=gt.m", "name=lte.m", "total=gt.9&total=lt.11", "total=gte.10&name=neq.x",
		}
		rs := make([]*Recorder, len(topics))
		for i, f := range topics {
			rs[i] = s.recorder(nil, "posts?"+f)
		}
		extra := s.recorder(nil, "posts?total=gt.100", "posts?total=lt.0") // removed below
		s.b.Unsubscribe(extra, pats(t, "posts?total=gt.100"))
		for i, v := range []any{int64(9), int64(10), json.Number("10.000"), 11.5, "9", "10", "m", "n", nil, int64(101), int64(-1)} {
			r := row("total", v, "name", v)
			s.publish(recEvent("posts", broker.ActionUpdate, fmt.Sprint(i), r))
		}
		got := s.settled(append(rs, extra)...)
		// Values: 0:9 1:10 2:10.000 3:11.5 4:"9" 5:"10" 6:"m" 7:"n" 8:null
		// 9:101 10:-1. Numbers compare as numbers, texts as texts ("9" >
		// "10"); a literal that is not a number never matches a number.
		for i, want := range []string{
			"3 4 6 7 9",       // total > 10
			"1 2 3 4 5 6 7 9", // total >= 10
			"0 10",            // total < 10
			"0 1 2 5 10",      // total <= 10.0 (as text "10" < "10.0")
			"7",               // name > m
			"4 5 6",           // name <= m
			"1 2",             // 9 < total < 11
			"4 5 6 7",         // total >= 10 and name != x (numbers never != a non-number)
			"10",              // extra's remaining pattern: total < 0
		} {
			var ids []string
			for _, ev := range got[i] {
				ids = append(ids, ev.RecordID)
			}
			if strings.Join(ids, " ") != want {
				t.Errorf("%s got %q, want %q", append(topics, "extra: posts?total=lt.0")[i], strings.Join(ids, " "), want)
			}
		}
	})
}
