package broker_test

import (
	"context"
	"fmt"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
)

type printer struct{}

func (printer) Deliver(ev *broker.Event) { fmt.Println(string(ev.JSON)) }
func (printer) DeliverBatch(evs []*broker.Event) {
	for _, ev := range evs {
		fmt.Println("replay:", string(ev.JSON))
	}
}

func (printer) Resync() { fmt.Println("resync") }

func Example() {
	b := broker.NewMemory(broker.Config{HistorySize: 100})
	defer b.Close()
	p, _ := broker.ParsePattern("posts.123")
	sub := &printer{}
	b.Subscribe(context.Background(), sub, []broker.Pattern{p}, nil)
	commit := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	b.Append(context.Background(), &broker.Tx{CommitLSN: 0x16B3748, EndLSN: 0x16B3778, CommitTime: commit, Events: []*broker.Event{
		{Kind: broker.KindRecord, Collection: "posts", Action: broker.ActionCreate, RecordID: "122",
			Record: broker.Row{{Name: "id", Value: int64(122)}}, Timestamp: commit, Position: broker.Position{LSN: 0x16B3748, Index: 1}},
		{Kind: broker.KindRecord, Collection: "posts", Action: broker.ActionCreate, RecordID: "123",
			Record: broker.Row{{Name: "id", Value: int64(123)}}, Timestamp: commit, Position: broker.Position{LSN: 0x16B3748, Index: 2}},
	}})
	// Output:
	// {"type":"record_event","collection":"posts","action":"create","record_id":"123","record":{"id":123},"timestamp":"2026-01-02T03:04:05Z","position":"0/16B3748:2"}
}
