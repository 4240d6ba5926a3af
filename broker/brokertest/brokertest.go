// Package brokertest is the contract every broker.Broker implementation must
// pass: call Run from the implementation's tests.
//
// The suite holds for asynchronous implementations too (events handed to
// Deliver later, from another goroutine): it never waits for a while to see
// whether something arrives. Before checking what did or did not arrive it
// waits on a barrier (Barrier): a sentinel event that the subscribers under
// test also match, published after everything else, and awaited at each of
// them. What it assumes of an implementation is that each subscriber
// receives what is published to it in the order of the Publish,
// PublishLive and Subscribe calls that produced it, so that whatever
// arrives before the sentinel, however late, is seen, and fails the check
// when it should not have arrived.
package brokertest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
)

// Tx builds a transaction at commit LSN lsn with one event per spec
// "collection/action/id" (id may be empty).
func Tx(lsn uint64, specs ...string) *broker.Tx {
	tx := &broker.Tx{CommitLSN: lsn, EndLSN: lsn + 8, CommitTime: time.Unix(1700000000, 0).UTC()}
	for i, s := range specs {
		var coll, action, id string
		parts := splitN(s, '/', 3)
		coll, action = parts[0], parts[1]
		if len(parts) > 2 {
			id = parts[2]
		}
		tx.Events = append(tx.Events, &broker.Event{
			Kind: broker.KindRecord, Collection: coll, Action: action, RecordID: id,
			Record:    broker.Row{{Name: "id", Value: id}},
			Timestamp: tx.CommitTime, Position: broker.Position{LSN: lsn, Index: uint32(i + 1)},
		})
	}
	return tx
}

func splitN(s string, sep byte, n int) []string {
	var out []string
	for len(out) < n-1 {
		i := -1
		for j := 0; j < len(s); j++ {
			if s[j] == sep {
				i = j
				break
			}
		}
		if i < 0 {
			break
		}
		out = append(out, s[:i])
		s = s[i+1:]
	}
	return append(out, s)
}

func pats(t testing.TB, topics ...string) []broker.Pattern {
	t.Helper()
	var ps []broker.Pattern
	for _, s := range topics {
		p, err := broker.ParsePattern(s)
		if err != nil {
			t.Fatalf("parse %q: %v", s, err)
		}
		ps = append(ps, p)
	}
	return ps
}

func positions(evs []*broker.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Position.String())
	}
	return out
}

func ids(evs []*broker.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Collection+"/"+e.Action+"/"+e.RecordID)
	}
	return out
}

// NewBroker returns a fresh broker that retains historySize events. The
// suite calls Begin with the zero position before it appends.
type NewBroker func(t *testing.T, historySize int) broker.Broker

// Run runs the contract suite against brokers made by newBroker. The cases
// of the single-node resume window run only on a broker that implements
// broker.Checkpoint.
func Run(t *testing.T, newBroker NewBroker) {
	const historySize = 16
	ctx := func(t *testing.T) context.Context {
		c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		t.Cleanup(cancel)
		return c
	}
	userNew := newBroker
	newBroker = func(t *testing.T, historySize int) broker.Broker {
		t.Helper()
		b := userNew(t, historySize)
		if err := b.Begin(ctx(t), broker.Position{}); err != nil {
			t.Fatalf("begin: %v", err)
		}
		return b
	}
	checkpoint := func(t *testing.T, b broker.Broker) broker.Checkpoint {
		t.Helper()
		c, ok := b.(broker.Checkpoint)
		if !ok {
			t.Skip("the broker has no single-node resume window (broker.Checkpoint)")
		}
		return c
	}
	publish := func(t *testing.T, b broker.Broker, tx *broker.Tx) {
		t.Helper()
		if err := b.Append(ctx(t), tx); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
	// homes knows, for each Recorder subscribed through subscribe, its
	// test and broker, for settle.
	type home struct {
		t *testing.T
		b broker.Broker
	}
	var homes sync.Map // *Recorder → home
	subscribe := func(t *testing.T, b broker.Broker, r broker.Subscriber, since *broker.Position, topics ...string) broker.Position {
		t.Helper()
		if rec, ok := r.(*Recorder); ok {
			homes.Store(rec, home{t, b})
		}
		pos, err := b.Subscribe(ctx(t), r, pats(t, topics...), since)
		if err != nil {
			t.Fatalf("subscribe %v: %v", topics, err)
		}
		return pos
	}
	// settle waits on a barrier (every event published so far has reached
	// r) and returns what r has. r must have been subscribed through
	// subscribe, to the broker under test.
	settle := func(r *Recorder) []*broker.Event {
		h, ok := homes.Load(r)
		if !ok {
			panic("brokertest: settle of a Recorder never subscribed through subscribe; call Barrier")
		}
		h.(home).t.Helper()
		Barrier(h.(home).t, h.(home).b, r)
		return r.Events()
	}

	t.Run("Filters", func(t *testing.T) { runFilters(t, newBroker) })
	t.Run("WaitFor", func(t *testing.T) { runWaitFor(t, newBroker) })

	t.Run("PatternsMatchByCollectionAndID", func(t *testing.T) {
		b := newBroker(t, historySize)
		all, coll, rec, other := NewRecorder(), NewRecorder(), NewRecorder(), NewRecorder()
		subscribe(t, b, all, nil, "*")
		subscribe(t, b, coll, nil, "posts")
		subscribe(t, b, rec, nil, "posts.7")
		subscribe(t, b, other, nil, "comments.*")
		publish(t, b, Tx(100, "posts/create/7", "posts/create/8", "users/create/7", "posts/truncate/"))
		if got := ids(all.WaitN(t, 4)); fmt.Sprint(got) != "[posts/create/7 posts/create/8 users/create/7 posts/truncate/]" {
			t.Errorf("* got %v", got)
		}
		if got := ids(coll.WaitN(t, 3)); fmt.Sprint(got) != "[posts/create/7 posts/create/8 posts/truncate/]" {
			t.Errorf("posts got %v", got)
		}
		if got := ids(rec.WaitN(t, 1)); fmt.Sprint(got) != "[posts/create/7]" {
			t.Errorf("posts.7 got %v", got)
		}
		if got := settle(other); len(got) != 0 {
			t.Errorf("comments.* got %v", ids(got))
		}
		if got := settle(rec); len(got) != 1 {
			t.Errorf("posts.7 got %v, want exactly one", ids(got))
		}
	})

	t.Run("OneDeliveryPerSubscriberWithOverlappingPatterns", func(t *testing.T) {
		b := newBroker(t, historySize)
		r := NewRecorder()
		subscribe(t, b, r, nil, "*", "posts", "posts.*", "posts.1")
		publish(t, b, Tx(100, "posts/update/1"))
		if got := settle(r); len(got) != 1 {
			t.Fatalf("got %d deliveries, want 1", len(got))
		}
	})

	t.Run("KeyChangeReachesOldAndNewID", func(t *testing.T) {
		b := newBroker(t, historySize)
		oldSub, newSub, both := NewRecorder(), NewRecorder(), NewRecorder()
		subscribe(t, b, oldSub, nil, "posts.1")
		subscribe(t, b, newSub, nil, "posts.2")
		subscribe(t, b, both, nil, "posts.1", "posts.2")
		tx := Tx(100, "posts/update/2")
		tx.Events[0].OldRecordID = "1"
		publish(t, b, tx)
		oldSub.WaitN(t, 1)
		newSub.WaitN(t, 1)
		if got := settle(both); len(got) != 1 {
			t.Fatalf("subscriber of both ids got %d deliveries, want 1", len(got))
		}
	})

	t.Run("CustomEventWithoutIDMatchesOnlyCollectionLevel", func(t *testing.T) {
		b := newBroker(t, historySize)
		coll, rec := NewRecorder(), NewRecorder()
		subscribe(t, b, coll, nil, "chat")
		subscribe(t, b, rec, nil, "chat.room1")
		if err := b.PublishLive(ctx(t), &broker.Event{Kind: broker.KindCustom, Collection: "chat", Name: "typing", Timestamp: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if err := b.PublishLive(ctx(t), &broker.Event{Kind: broker.KindCustom, Collection: "chat", Name: "typing", RecordID: "room1", Timestamp: time.Now()}); err != nil {
			t.Fatal(err)
		}
		coll.WaitN(t, 2)
		got := rec.WaitN(t, 1)
		if got[0].RecordID != "room1" {
			t.Fatalf("chat.room1 got %v", ids(got))
		}
		if got := settle(rec); len(got) != 1 {
			t.Fatalf("chat.room1 got %d events, want 1", len(got))
		}
		for _, e := range coll.Events() {
			if !e.Position.IsZero() {
				t.Errorf("live event has position %s", e.Position)
			}
			if len(e.JSON) == 0 {
				t.Error("live event not encoded")
			}
		}
	})

	t.Run("CommitOrderAndDuplicateTransactionsIgnored", func(t *testing.T) {
		b := newBroker(t, historySize)
		r := NewRecorder()
		subscribe(t, b, r, nil, "posts")
		publish(t, b, Tx(100, "posts/create/1", "posts/create/2"))
		publish(t, b, Tx(200, "posts/create/3"))
		publish(t, b, Tx(100, "posts/create/1", "posts/create/2")) // replayed after a reconnect
		publish(t, b, Tx(300, "posts/delete/1"))
		got := r.WaitN(t, 4)
		if fmt.Sprint(positions(got)) != "[0/64:1 0/64:2 0/C8:1 0/12C:1]" {
			t.Fatalf("order: %v", positions(got))
		}
		if got := settle(r); len(got) != 4 {
			t.Fatalf("got %d events, want 4 (duplicate tx delivered?)", len(got))
		}
	})

	t.Run("TransactionIsDeliveredAsOneBatch", func(t *testing.T) {
		b := newBroker(t, historySize)
		coll, one := NewRecorder(), NewRecorder()
		subscribe(t, b, coll, nil, "posts", "posts.2")
		subscribe(t, b, one, nil, "posts.3")
		publish(t, b, Tx(100, "posts/create/1", "users/create/1", "posts/create/2", "posts/create/3"))
		publish(t, b, Tx(200, "posts/create/4"))
		coll.WaitN(t, 4)
		settle(coll)
		if got := fmt.Sprint(coll.Units()); got != "[3 1]" {
			t.Fatalf("units %s, want [3 1]: a transaction's events must arrive as one batch, once each", got)
		}
		if got := fmt.Sprint(ids(coll.Events())); got != "[posts/create/1 posts/create/2 posts/create/3 posts/create/4]" {
			t.Fatalf("events %s", got)
		}
		one.WaitN(t, 1)
		if got := fmt.Sprint(one.Units(), ids(settle(one))); got != "[1] [posts/create/3]" {
			t.Fatalf("single match: %s", got)
		}
	})

	t.Run("EventsAreEncodedOnceAndShared", func(t *testing.T) {
		b := newBroker(t, historySize)
		r1, r2 := NewRecorder(), NewRecorder()
		subscribe(t, b, r1, nil, "posts")
		subscribe(t, b, r2, nil, "posts.1")
		publish(t, b, Tx(100, "posts/create/1"))
		e1, e2 := r1.WaitN(t, 1)[0], r2.WaitN(t, 1)[0]
		if len(e1.JSON) == 0 || &e1.JSON[0] != &e2.JSON[0] {
			t.Fatal("subscribers did not share the same encoded bytes")
		}
	})

	t.Run("SubscribedPosition", func(t *testing.T) {
		b := newBroker(t, historySize)
		if pos := subscribe(t, b, NewRecorder(), nil, "posts"); !pos.IsZero() {
			t.Fatalf("position before any event = %s, want zero", pos)
		}
		publish(t, b, Tx(100, "posts/create/1", "other/create/2"))
		if pos := subscribe(t, b, NewRecorder(), nil, "posts"); pos.String() != "0/64:2" {
			t.Fatalf("position = %s, want 0/64:2", pos)
		}
		if got := b.Position().String(); got != "0/64:2" {
			t.Fatalf("Position = %s", got)
		}
	})

	t.Run("UnsubscribeAndRemove", func(t *testing.T) {
		b := newBroker(t, historySize)
		r := NewRecorder()
		subscribe(t, b, r, nil, "posts", "comments")
		b.Unsubscribe(r, pats(t, "posts.*", "unknown.1"))
		publish(t, b, Tx(100, "posts/create/1", "comments/create/1"))
		if got := ids(r.WaitN(t, 1)); fmt.Sprint(got) != "[comments/create/1]" {
			t.Fatalf("got %v", got)
		}
		b.Remove(r)
		publish(t, b, Tx(200, "comments/create/2"))
		if got := settle(r); len(got) != 1 {
			t.Fatalf("removed subscriber got %v", ids(got))
		}
	})

	t.Run("ResumeReplaysWithoutGapOrDuplicate", func(t *testing.T) {
		b := newBroker(t, historySize)
		publish(t, b, Tx(100, "posts/create/1", "posts/create/2"))
		publish(t, b, Tx(200, "posts/create/3", "comments/create/9"))
		since := broker.Position{LSN: 100, Index: 1}
		r := NewRecorder()
		subscribe(t, b, r, &since, "posts")
		publish(t, b, Tx(300, "posts/create/4"))
		got := r.WaitN(t, 3)
		if fmt.Sprint(positions(got)) != "[0/64:2 0/C8:1 0/12C:1]" {
			t.Fatalf("resume got %v", positions(got))
		}
	})

	t.Run("ResumeSkipsEventsAlreadyMatchedByExistingPatterns", func(t *testing.T) {
		b := newBroker(t, historySize)
		r := NewRecorder()
		subscribe(t, b, r, nil, "posts")
		publish(t, b, Tx(100, "posts/create/1"))
		publish(t, b, Tx(150, "posts/update/1"))
		publish(t, b, Tx(200, "comments/create/1"))
		r.WaitN(t, 2)
		since := broker.Position{LSN: 100, Index: 1}
		subscribe(t, b, r, &since, "posts.1", "comments")
		got := settle(r)
		if fmt.Sprint(positions(got)) != "[0/64:1 0/96:1 0/C8:1]" {
			t.Fatalf("got %v: an event already delivered by an existing pattern was replayed, or one was missed", positions(got))
		}
	})

	t.Run("ResumeReplaysEventsAnOverlappingLaterPatternDidNotDeliver", func(t *testing.T) {
		b := newBroker(t, historySize)
		r := NewRecorder()
		publish(t, b, Tx(100, "posts/create/1"))
		publish(t, b, Tx(150, "posts/update/1"))
		// posts.1 goes live after 0/96:1: that event never reached r.
		subscribe(t, b, r, nil, "posts.1")
		publish(t, b, Tx(200, "posts/update/1"))
		r.WaitN(t, 1)
		since := broker.Position{LSN: 100, Index: 1}
		subscribe(t, b, r, &since, "posts")
		got := settle(r)
		if fmt.Sprint(positions(got)) != "[0/C8:1 0/96:1]" {
			t.Fatalf("got %v, want [0/C8:1 0/96:1]: an event after since that no pattern delivered was skipped, or one was duplicated", positions(got))
		}
	})

	t.Run("ResumeIsGaplessUnderConcurrentPublishing", func(t *testing.T) {
		b := newBroker(t, 1000)
		const n = 400
		publish(t, b, Tx(10, "posts/create/0"))
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 1; i < n; i++ {
				if err := b.Append(context.Background(), Tx(uint64(10+i*10), fmt.Sprintf("posts/create/%d", i))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		time.Sleep(time.Millisecond)
		since := broker.Position{LSN: 10, Index: 1}
		r := NewRecorder()
		subscribe(t, b, r, &since, "posts")
		<-done
		got := r.WaitN(t, n-1)
		for i, e := range got {
			if want := uint64(20 + i*10); e.Position.LSN != want {
				t.Fatalf("event %d has LSN %d, want %d (gap or duplicate between replay and live)", i, e.Position.LSN, want)
			}
		}
		if len(settle(r)) != n-1 {
			t.Fatalf("got %d events, want %d", len(r.Events()), n-1)
		}
	})

	t.Run("HistoryUnavailableForEvictedPosition", func(t *testing.T) {
		b := newBroker(t, historySize)
		for i := 0; i < historySize+3; i++ {
			publish(t, b, Tx(uint64(100+i), "posts/create/x"))
		}
		r := NewRecorder()
		old := broker.Position{LSN: 100, Index: 1}
		if _, err := b.Subscribe(ctx(t), r, pats(t, "posts"), &old); !errors.Is(err, broker.ErrHistoryUnavailable) {
			t.Fatalf("err = %v, want ErrHistoryUnavailable", err)
		}
		publish(t, b, Tx(10000, "posts/create/y"))
		Barrier(t, b, r)
		if got := r.Events(); len(got) != 0 {
			t.Fatalf("failed subscribe still subscribed: got %v", ids(got))
		}
		// The position just before the oldest retained event is still fine.
		// historySize+4 events were published: the first four are gone,
		// and the position of the last evicted one is still resumable.
		edge := broker.Position{LSN: 103, Index: 1}
		r2 := NewRecorder()
		subscribe(t, b, r2, &edge, "posts")
		if got := settle(r2); len(got) != historySize || got[0].Position.LSN != 104 {
			t.Fatalf("edge resume got %v", positions(got))
		}
	})

	t.Run("ResumeFromBaseAfterRestart", func(t *testing.T) {
		b := newBroker(t, historySize)
		c := checkpoint(t, b)
		base := broker.Position{LSN: 500, Index: 3}
		c.SetBase(base)
		if got := subscribe(t, b, NewRecorder(), nil, "posts"); got != base {
			t.Fatalf("subscribed position after SetBase = %s, want %s", got, base)
		}
		publish(t, b, Tx(500, "posts/create/stale")) // already published before the restart
		publish(t, b, Tx(600, "posts/create/1"))
		r := NewRecorder()
		subscribe(t, b, r, &base, "posts")
		if got := ids(settle(r)); fmt.Sprint(got) != "[posts/create/1]" {
			t.Fatalf("got %v", got)
		}
		// A later base (a recreated slot) drops what came before it.
		publish(t, b, Tx(700, "posts/create/2"))
		c.SetBase(broker.Position{LSN: 800})
		mid := broker.Position{LSN: 600, Index: 1}
		if _, err := b.Subscribe(ctx(t), NewRecorder(), pats(t, "posts"), &mid); !errors.Is(err, broker.ErrHistoryUnavailable) {
			t.Fatalf("position before a later base: err = %v, want ErrHistoryUnavailable", err)
		}
		older := broker.Position{LSN: 500, Index: 2}
		if _, err := b.Subscribe(ctx(t), NewRecorder(), pats(t, "posts"), &older); !errors.Is(err, broker.ErrHistoryUnavailable) {
			t.Fatalf("position before base: err = %v, want ErrHistoryUnavailable", err)
		}
	})

	t.Run("RestartRebuildsHistoryWithoutDeliveringTwice", func(t *testing.T) {
		// After a restart the reader re-streams the window after the
		// checkpoint's base (here 0/64:1) up to what the earlier run had
		// delivered (0/C8:1): retained for resume, not delivered again.
		b := newBroker(t, historySize)
		c := checkpoint(t, b)
		c.SetBase(broker.Position{LSN: 100, Index: 1})
		c.MarkDelivered(broker.Position{LSN: 200, Index: 1})
		live := NewRecorder()
		if pos := subscribe(t, b, live, nil, "posts", "comments"); pos.String() != "0/C8:1" {
			t.Fatalf("subscribed position %s, want what the earlier run delivered, 0/C8:1", pos)
		}
		// A client that saw 0/96:1 (a posts event) resumes while the
		// stream is still catching up: it must wait for the catch-up.
		resumed := make(chan broker.Position, 1)
		r := NewRecorder()
		go func() {
			since := broker.Position{LSN: 150, Index: 1}
			pos, err := b.Subscribe(ctx(t), r, pats(t, "posts"), &since)
			if err != nil {
				t.Errorf("resume: %v", err)
			}
			resumed <- pos
		}()
		publish(t, b, Tx(100, "posts/create/0", "posts/create/1")) // 0/64:1 is before the base
		publish(t, b, Tx(150, "posts/create/2"))
		publish(t, b, Tx(180, "comments/create/3"))
		publish(t, b, Tx(200, "posts/create/4"))
		publish(t, b, Tx(300, "posts/create/5")) // new
		<-resumed
		if got := ids(r.WaitN(t, 2)); fmt.Sprint(got) != "[posts/create/4 posts/create/5]" {
			t.Fatalf("resumed client got %v, want [posts/create/4 posts/create/5]", got)
		}
		if got := ids(settle(live)); fmt.Sprint(got) != "[posts/create/5]" {
			t.Fatalf("live client got %v: re-streamed events were delivered again", got)
		}
		base, first := c.Retained()
		if base.String() != "0/64:1" || first.String() != "0/64:2" {
			t.Fatalf("Retained() = %s, %s", base, first)
		}
		for _, since := range []string{"0/64:1", "0/B4:1"} {
			p, _ := broker.ParsePosition(since)
			r := NewRecorder()
			subscribe(t, b, r, &p, "posts.*")
			if n := len(settle(r)); n == 0 {
				t.Fatalf("resume from %s replayed nothing", since)
			}
		}
	})

	t.Run("SinceAheadWaitsForStream", func(t *testing.T) {
		b := newBroker(t, historySize)
		publish(t, b, Tx(100, "posts/create/1"))
		ahead := broker.Position{LSN: 200, Index: 1}
		go func() {
			time.Sleep(100 * time.Millisecond)
			_ = b.Append(context.Background(), Tx(200, "posts/create/2"))
			_ = b.Append(context.Background(), Tx(300, "posts/create/3"))
		}()
		r := NewRecorder()
		start := time.Now()
		pos := subscribe(t, b, r, &ahead, "posts")
		if time.Since(start) < 50*time.Millisecond {
			t.Fatal("subscribe answered before the stream reached since")
		}
		if pos.Compare(ahead) < 0 {
			t.Fatalf("position %s before since %s", pos, ahead)
		}
		got := r.WaitN(t, 1)
		for _, e := range settle(r) {
			if e.Position.Compare(ahead) <= 0 {
				t.Fatalf("delivered an event at or before since: %v", positions(got))
			}
		}
		short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		far := broker.Position{LSN: 99999, Index: 1}
		if _, err := b.Subscribe(short, NewRecorder(), pats(t, "posts"), &far); !errors.Is(err, broker.ErrHistoryUnavailable) {
			t.Fatalf("far-ahead since: err = %v, want ErrHistoryUnavailable", err)
		}
	})

	t.Run("ConcurrentSubscribersAndPublisher", func(t *testing.T) {
		b := newBroker(t, historySize)
		const subs, txs = 50, 200
		var wg sync.WaitGroup
		recs := make([]*Recorder, subs)
		for i := range recs {
			recs[i] = NewRecorder()
			subscribe(t, b, recs[i], nil, "posts")
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 1; i <= txs; i++ {
				_ = b.Append(context.Background(), Tx(uint64(i), fmt.Sprintf("posts/update/%d", i)))
			}
		}()
		for i := 0; i < 20; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				r := NewRecorder()
				topic := fmt.Sprintf("posts.%d", i)
				for j := 0; j < 20; j++ {
					_, _ = b.Subscribe(context.Background(), r, pats(t, topic), nil)
					b.Unsubscribe(r, pats(t, topic))
				}
				b.Remove(r)
			}(i)
		}
		wg.Wait()
		for _, r := range recs {
			got := r.WaitN(t, txs)
			for i, e := range got {
				if e.Position.LSN != uint64(i+1) {
					t.Fatalf("out of order at %d: %v", i, e.Position)
				}
			}
		}
	})
}
