package wsapi_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/coder/websocket"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/wsapi"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

// A client subscribes to a collection and receives its events.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	public := "true"
	set, _ := rules.Compile(&rules.Config{Collections: map[string]rules.Collection{"posts": {Read: &public}}}, "admin")
	b := broker.NewMemory(broker.Config{HistorySize: 100, Prepare: set.Prepare})
	b.SetBase(broker.Position{LSN: 0x16B3700}) // the stream's start: the WAL reader gives it when it connects
	s, _ := wsapi.New(wsapi.Config{Broker: b, Rules: set})
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	defer s.Shutdown(ctx)

	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(hs.URL, "http")+"/realtime", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.CloseNow()
	c.Read(ctx) // {"type":"connected",...}
	c.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","id":"1","topics":["posts.*"]}`))
	_, reply, _ := c.Read(ctx)
	fmt.Println(string(reply))

	commit := time.Date(2026, 1, 2, 3, 4, 5, 678901000, time.UTC)
	b.Append(ctx, &broker.Tx{CommitLSN: 0x16B3748, EndLSN: 0x16B3780, CommitTime: commit, Events: []*broker.Event{{
		Kind: broker.KindRecord, Collection: "posts", Action: broker.ActionCreate, RecordID: "123",
		Record:    broker.Row{{Name: "id", Value: int64(123)}, {Name: "title", Value: "New"}},
		Timestamp: commit, Position: broker.Position{LSN: 0x16B3748, Index: 1},
	}}})
	_, ev, _ := c.Read(ctx)
	fmt.Println(string(ev))
	// Output:
	// {"type":"subscribed","id":"1","topics":["posts.*"],"position":"0/16B3700:0"}
	// {"type":"record_event","collection":"posts","action":"create","record_id":"123","record":{"id":123,"title":"New"},"timestamp":"2026-01-02T03:04:05.678901Z","position":"0/16B3748:1"}
}
