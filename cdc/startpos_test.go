package cdc

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/pgtest"
)

// A slot that exists without a checkpoint (created by hand, or by a run
// that stopped before its first acknowledgement) still gives the sink its
// start position, <confirmed LSN>:0, before anything is published: the
// position subscribers are told before the first event, and a valid since.
func TestReaderStartPositionOfExistingSlot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	slot := randomName("slot_")
	mustExec(t, ctx, conn, `CREATE TABLE items (id int PRIMARY KEY)`)
	var confirmed string
	if err := conn.QueryRow(ctx, `SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`, slot).Scan(&confirmed); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = Teardown(context.Background(), url, "pgrealtime", slot) })
	lsn, err := pglogrepl.ParseLSN(confirmed)
	if err != nil {
		t.Fatal(err)
	}
	want := broker.Position{LSN: uint64(lsn)}

	b := broker.NewMemory(broker.Config{HistorySize: 100})
	defer b.Close()
	rr := startReader(t, url, b, func(c *Config) { c.Slot = slot })
	rr.waitReady(t, ctx)
	if got := b.Position(); got != want {
		t.Fatalf("position before the first event = %s, want the slot's start %s", got, want)
	}
	mustExec(t, ctx, conn, `INSERT INTO items VALUES (1)`)
	sub := &chanSub{ch: make(chan *broker.Event, 10)}
	if _, err := b.Subscribe(ctx, sub, []broker.Pattern{{All: true}}, &want); err != nil {
		t.Fatalf("subscribe since the start position %s: %v", want, err)
	}
	select {
	case ev := <-sub.ch:
		if ev.Collection != "items" || ev.RecordID != "1" || !want.Less(ev.Position) {
			t.Fatalf("got %s at %s", ev.Collection, ev.Position)
		}
	case <-ctx.Done():
		t.Fatal("the insert after the start position never arrived")
	}
}

// chanSub is a broker.Subscriber that hands events to a channel.
type chanSub struct{ ch chan *broker.Event }

func (s *chanSub) Deliver(ev *broker.Event) { s.ch <- ev }

func (s *chanSub) Resync() {}

func (s *chanSub) DeliverBatch(evs []*broker.Event) {
	for _, ev := range evs {
		s.ch <- ev
	}
}
