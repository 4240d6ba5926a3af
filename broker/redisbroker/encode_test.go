package redisbroker

import (
	"bytes"
	"slices"
	"testing"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/redistest"
)

// TestAppendDropsAnEventItCannotEncode: an event the codec refuses is
// dropped (logged) and the rest of its transaction crosses intact, each
// entry with its own payload, whether the refused event is in the middle
// or at the end (then the new last entry ends the transaction).
func TestAppendDropsAnEventItCannotEncode(t *testing.T) {
	srv := redistest.Start(t, redistest.Options{})
	a, b := startNode(t, srv, 1000), startNode(t, srv, 1000)
	mid, tail, whole := benchRowTx(1000, 4), benchRowTx(1100, 3), benchRowTx(1200, 5)
	bad := broker.Row{{Name: "id", Value: map[string]any{"not": "encodable"}}}
	mid.Events[1].Record = bad
	tail.Events[2].Record = bad
	r := newReader(a.b, 900)
	r.publish(t, mid, tail, whole)
	want := []*broker.Event{mid.Events[0], mid.Events[2], mid.Events[3], tail.Events[0], tail.Events[1]}
	want = append(want, whole.Events...)
	last := want[len(want)-1].Position
	// The leader applies what it encoded (local.go): the same events.
	a.rec.waitPos(t, last)
	if got, _, _ := a.rec.snapshot(); !slices.Equal(got, posList(want)) {
		t.Fatalf("the leader applied %v, want %v", got, posList(want))
	}
	b.rec.waitPos(t, last)
	b.rec.mu.Lock()
	defer b.rec.mu.Unlock()
	if got := posList(b.rec.events); !slices.Equal(got, posList(want)) {
		t.Fatalf("applied %v, want %v", got, posList(want))
	}
	for i, ev := range b.rec.events {
		got, err1 := ev.Encode()
		w, err2 := want[i].Encode()
		if err1 != nil || err2 != nil || !bytes.Equal(got, w) {
			t.Fatalf("event %s crossed as %s (%v), want %s (%v)", ev.Position, got, err1, w, err2)
		}
	}
	if n := len(b.rec.txs); n != 3 {
		t.Fatalf("%d Apply calls %v, want one per transaction", n, b.rec.txs)
	}
}
