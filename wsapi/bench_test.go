package wsapi

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

// BenchmarkDeliver is the per-recipient cost of Deliver (rules check and
// queueing; the broker's own fan-out is BenchmarkFanout in broker).
func BenchmarkDeliver(b *testing.B) {
	str := func(s string) *string { return &s }
	set, err := rules.Compile(&rules.Config{Collections: map[string]rules.Collection{
		"public": {Read: str("true")},
		"owned":  {Read: str("auth.sub == record.user_id")},
	}}, DefaultAdminRole)
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Config{Broker: broker.NewMemory(broker.Config{}), Rules: set, SendQueue: 1 << 16, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	id := &auth.Identity{Subject: "u1", Role: "user", Claims: map[string]any{"sub": "u1", "role": "user"}}
	for _, coll := range []string{"public", "owned"} {
		b.Run(coll, func(b *testing.B) {
			c := s.newConn(nil, httptest.NewRequest("GET", "/realtime", nil).RemoteAddr, id)
			ev := &broker.Event{Kind: broker.KindRecord, Collection: coll, Action: "create", RecordID: "1",
				Record: broker.Row{{Name: "id", Value: int64(1)}, {Name: "user_id", Value: "u1"}}, Timestamp: time.Now()}
			if !set.Prepare(ev) {
				b.Fatal("prepare dropped the event")
			}
			ev.JSON, _ = ev.Encode()
			b.ReportAllocs()
			b.ResetTimer()
			queued := 0
			for i := range b.N {
				c.Deliver(ev)
				if (i+1)%s.cfg.SendQueue == 0 { // drain outside the timer
					b.StopTimer()
					queued += drain(c)
					b.StartTimer()
				}
			}
			b.StopTimer()
			if queued += drain(c); queued != b.N {
				b.Fatalf("queued %d of %d", queued, b.N)
			}
		})
	}
}

func drain(c *conn) int {
	for n := 0; ; n++ {
		if _, ok := c.pop(); !ok {
			return n
		}
	}
}

// BenchmarkSocketFanout publishes events to 100 real WebSocket clients on
// loopback and reports deliveries per second (whole path: broker, rules,
// queue, writer, socket, client read).
func BenchmarkSocketFanout(b *testing.B) {
	const clients = 100
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	br := broker.NewMemory(broker.Config{HistorySize: 16})
	br.SetBase(broker.Position{LSN: 0x100}) // the stream's start, as the WAL reader gives it
	v, _ := auth.NewVerifier(auth.Config{HS256Secret: testSecret})
	s, err := New(Config{Broker: br, Verifier: v, SendQueue: b.N + 16, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	defer hs.Close()
	defer s.Shutdown(ctx)
	tok := adminToken(b)
	var wg sync.WaitGroup
	ready := make(chan struct{}, clients)
	for i := range clients {
		ws, _, err := websocket.Dial(ctx, "ws"+hs.URL[4:]+"/realtime?access_token="+tok, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer ws.CloseNow()
		ws.Read(ctx) // connected
		ws.Write(ctx, websocket.MessageText, []byte(`{"type":"subscribe","topics":["bench"]}`))
		ws.Read(ctx) // subscribed
		wg.Add(1)
		go func() {
			defer wg.Done()
			ready <- struct{}{}
			for n := 0; n < b.N; n++ {
				if _, _, err := ws.Read(ctx); err != nil {
					panic(fmt.Sprintf("client %d after %d: %v", i, n, err))
				}
			}
		}()
	}
	for range clients {
		<-ready
	}
	ev := func(i int) *broker.Tx {
		lsn := uint64(0x1000 + i*0x10)
		e := &broker.Event{Kind: broker.KindRecord, Collection: "bench", Action: "create", RecordID: fmt.Sprint(i),
			Record:    broker.Row{{Name: "id", Value: int64(i)}, {Name: "title", Value: "hello world"}},
			Timestamp: time.Now(), Position: broker.Position{LSN: lsn, Index: 1}}
		return &broker.Tx{CommitLSN: lsn, EndLSN: lsn + 1, Events: []*broker.Event{e}}
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if err := br.Append(ctx, ev(i)); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.ReportMetric(float64(b.N*clients)/time.Since(start).Seconds(), "deliveries/s")
}
