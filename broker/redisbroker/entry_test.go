package redisbroker

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/redis/rueidis"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/redistest"
)

// TestLargeTransactionsTakeFewEntries: a transaction's events share
// entries (at most maxEntryEvents each), a one-row transaction is one
// entry, and every node applies the events one by one at their positions.
func TestLargeTransactionsTakeFewEntries(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a, b := startNode(t, srv, 10000), startNode(t, srv, 10000)
	big, small := tx(1000, 1000), tx(1100, 1)
	newReader(a.b, 900).publish(t, big, small)
	want := txPositions(big, small)
	for _, n := range []*node{a, b} {
		n.rec.waitPos(t, want[len(want)-1])
		got, resets, _ := n.rec.snapshot()
		if !slices.Equal(got, want) || len(resets) != 0 {
			t.Fatalf("applied %d events (resets %v), want %d", len(got), resets, len(want))
		}
	}
	w := newClient(t, srv)
	entries, err := w.Do(context.Background(), w.B().Xrange().Key(a.b.keys.stream).Start("-").End("+").Build()).AsXRangeSlices()
	if err != nil {
		t.Fatal(err)
	}
	wantEntries := (1000+maxEntryEvents-1)/maxEntryEvents + 1
	if len(entries) != wantEntries {
		t.Fatalf("%d stream entries for a 1 000-row and a 1-row transaction, want %d", len(entries), wantEntries)
	}
	prev := broker.Position{LSN: 900}
	for _, e := range entries {
		en, err := decodeEntry(e, nil)
		if err != nil {
			t.Fatalf("entry %s: %v", e.ID, err)
		}
		if len(en.events) > maxEntryEvents || en.prev != prev {
			t.Fatalf("entry %s: %d events, p %s; want at most %d, p %s", e.ID, len(en.events), streamID(en.prev), maxEntryEvents, streamID(prev))
		}
		prev = en.id
	}
}

// TestTrimKeepsHistoryEventsNotEntries: with entries of many events the
// stream keeps about as many entries as hold --history-size events (not
// that many entries), and a node that starts afterwards loads at least
// that many events, a page of XREVRANGE at a time.
func TestTrimKeepsHistoryEventsNotEntries(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	const history = 1500 // more than one load page of one-event entries
	a := startNode(t, srv, history, func(_ *Config, br *Broker) { br.trimGrace = 0 })
	var txs []*broker.Tx
	for i := 0; i < 20; i++ {
		txs = append(txs, tx(uint64(1000+100*i), 1000))
	}
	r := newReader(a.b, 900)
	for _, x := range txs {
		r.publish(t, x) // one batch each: a batch is never trimmed as it lands
	}
	w := newClient(t, srv)
	ctx := context.Background()
	n, err := w.Do(ctx, w.B().Xlen().Key(a.b.keys.stream).Build()).AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	// 20 000 events in 320 entries; history needs 24 of them. Approximate
	// trimming removes whole nodes of 100 entries.
	if n < 24 || n > 24+100 {
		t.Fatalf("stream keeps %d entries, want 24 to 124 (%d events of history in entries of %d)", n, history, maxEntryEvents)
	}
	b := startNode(t, srv, history)
	last := txs[len(txs)-1].Events[999].Position
	b.rec.waitPos(t, last)
	got, _, _ := b.rec.snapshot()
	if len(got) < history || got[len(got)-1] != last {
		t.Fatalf("a new node loaded %d events ending at %v, want at least %d ending at %s", len(got), got[len(got)-1:], history, last)
	}

	// One-event entries: the load pages through them.
	var small []*broker.Tx
	for i := 0; i < history+200; i++ {
		small = append(small, tx(uint64(100000+10*i), 1))
	}
	r.publish(t, small...)
	c := startNode(t, srv, history)
	last = small[len(small)-1].Events[0].Position
	c.rec.waitPos(t, last)
	got, _, _ = c.rec.snapshot()
	if len(got) < history {
		t.Fatalf("a new node loaded %d one-event entries, want at least %d", len(got), history)
	}
}

// TestDecodeEntryRefusesMalformedEntries: every way an entry can be wrong
// is an error that says what, never a panic or a wrong event.
func TestDecodeEntryRefusesMalformedEntries(t *testing.T) {
	ev := tx(100, 3).Events
	body := func(idx uint32, e *broker.Event, txLen int) []byte {
		enc, err := broker.AppendBinary(nil, e, txLen)
		if err != nil {
			t.Fatal(err)
		}
		b := binary.AppendUvarint(nil, uint64(idx))
		b = binary.AppendUvarint(b, uint64(len(enc)))
		return append(b, enc...)
	}
	entryOf := func(count int, bodies ...[]byte) string {
		b := binary.AppendUvarint([]byte{entryFormat}, uint64(count))
		for _, x := range bodies {
			b = append(b, x...)
		}
		return string(b)
	}
	good := entryOf(2, body(1, ev[0], 3), body(2, ev[1], 3))
	mk := func(id, p, payload string) rueidis.XRangeSlice {
		return rueidis.XRangeSlice{ID: id, FieldValues: []rueidis.XRangeFieldValue{{Field: "p", Value: p}, {Field: "e", Value: payload}}}
	}
	if en, err := decodeEntry(mk("100-2", "90-1", good), nil); err != nil || len(en.events) != 2 || en.events[1].Position != ev[1].Position || en.txLen != 3 {
		t.Fatalf("good entry: %+v, %v", en, err)
	}
	for _, c := range []struct {
		name, id, p, payload, want string
	}{
		{"format 1 payload", "100-1", "90-1", string(body(1, ev[0], 3)[2:]), "entry format 1"},
		{"no events", "100-1", "90-1", entryOf(0), "an entry of 0 events"},
		{"too many events", "100-1", "90-1", entryOf(maxEntryEvents + 1), "an entry of 65 events"},
		{"fewer events than counted", "100-2", "90-1", entryOf(3, body(1, ev[0], 3), body(2, ev[1], 3)), "truncated"},
		{"trailing bytes", "100-2", "90-1", good + "x", "trailing bytes"},
		{"last event is not the id", "100-3", "90-1", good, "not its id"},
		{"indexes not increasing", "100-1", "90-1", entryOf(2, body(2, ev[1], 3), body(1, ev[0], 3)), "is not after"},
		{"p not before the first event", "100-2", "100-1", good, "is not after"},
		{"transaction lengths disagree", "100-2", "90-1", entryOf(2, body(1, ev[0], 3), body(2, ev[1], 4)), "disagree"},
		{"index beyond the transaction", "100-3", "90-1", entryOf(1, body(3, ev[2], 2)), "beyond"},
		{"live event", "100-1", "90-1", entryOf(1, body(1, ev[0], 0)), "live event"},
		{"index 0", "100-0", "90-1", good, "base"},
		{"event length beyond the payload", "100-1", "90-1", entryOf(1, []byte{1, 100, 1}), "bytes of"},
		{"no p", "100-1", "", "", "lacks field"},
	} {
		e := mk(c.id, c.p, c.payload)
		if c.p == "" {
			e.FieldValues = e.FieldValues[1:]
		}
		_, err := decodeEntry(e, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.want)
		}
		if strings.Contains(c.name, "format") && !errors.Is(err, broker.ErrBadBinary) {
			t.Errorf("%s: %v does not wrap ErrBadBinary", c.name, err)
		}
	}
}

// TestKeptEntriesCountEvents: the trim keeps as few newest entries as
// hold the history's events; entries from before the session, and entries
// Redis refused (another appender cut those events its own way), count as
// one event each, so the stream never keeps fewer events than the history.
func TestKeptEntriesCountEvents(t *testing.T) {
	var k keptEntries
	if n := k.add([]int{64, 64}, 100); n != 2 {
		t.Fatalf("two entries of 64 for a history of 100: keep %d, want 2", n)
	}
	if n := k.add([]int{64}, 100); n != 2 {
		t.Fatalf("three entries of 64: keep %d, want the newest 2", n)
	}
	if n := k.add(nil, 1000); n != 2+1000-128 {
		t.Fatalf("a history of 1 000 with 128 events known: keep %d, want %d (older entries count as one event)", n, 2+1000-128)
	}
	var r keptEntries
	r.add([]int{64, 64, 64}, 100) // counts the newest two: 128 events
	r.recount(0, 1)               // the newest was refused
	if n := r.add(nil, 100); n != 2+100-65 {
		t.Fatalf("after the newest entry was refused: keep %d, want %d (65 events counted, the rest one per entry)", n, 2+100-65)
	}
	r.recount(1, 1)
	if n := r.add(nil, 100); n != 2+100-2 {
		t.Fatalf("after two refusals: keep %d, want %d", n, 2+100-2)
	}
}
