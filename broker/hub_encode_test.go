package broker_test

import (
	"bytes"
	"testing"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/broker/brokertest"
)

// A hub without members retains events without their JSON (a cluster
// leader whose clients are on other nodes pays for no encoding); the JSON
// is made, once, from the prepared event when it is first delivered,
// replayed or live.
func TestHubEncodesOnlyWhatItDelivers(t *testing.T) {
	h := broker.NewHub(broker.HubConfig{HistorySize: 16, Prepare: func(ev *broker.Event) bool {
		ev.Record = ev.Record.Without(map[string]struct{}{"secret": {}}) // as rules' omit_columns
		return ev.Collection != "hidden"
	}})
	defer h.Close()
	h.Reset(pos(50, 0))
	tx := brokertest.Tx(100, "posts/create/1", "hidden/create/2", "posts/create/3")
	for _, ev := range tx.Events {
		ev.Record = append(ev.Record, broker.Column{Name: "secret", Value: "s3cret"})
	}
	h.Apply(broker.Position{}, tx.Events)
	for _, ev := range tx.Events {
		if ev.JSON != nil {
			t.Fatalf("event %s was encoded with no member to deliver it to: %s", ev.Position, ev.JSON)
		}
	}

	// Replayed: encoded from the prepared (trimmed) event.
	since := pos(50, 0)
	r := hubSubscribe(t, h, &since, "*")
	got := r.WaitN(t, 2)
	if want := positionsOf([]*broker.Event{tx.Events[0], tx.Events[2]}); positionsOf(got) != want {
		t.Fatalf("replayed %s, want %s (the hidden event dropped)", positionsOf(got), want)
	}
	for _, ev := range got {
		want, err := ev.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(ev.JSON, want) || bytes.Contains(ev.JSON, []byte("s3cret")) {
			t.Fatalf("replayed JSON %s, want %s", ev.JSON, want)
		}
	}
	first := got[0].JSON

	// A second replay shares the same JSON (encoded once).
	r2 := hubSubscribe(t, h, &since, "posts")
	if got2 := r2.WaitN(t, 2); &got2[0].JSON[0] != &first[0] {
		t.Fatal("a second replay encoded the event again")
	}

	// With members, a transaction is encoded when it is applied.
	tx2 := brokertest.Tx(200, "posts/create/4")
	h.Apply(pos(100, 3), tx2.Events)
	if ev := r.WaitN(t, 3)[2]; len(ev.JSON) == 0 || ev.Position != pos(200, 1) {
		t.Fatalf("live delivery of %s without JSON", ev.Position)
	}
}
