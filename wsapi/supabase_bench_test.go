package wsapi

import (
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
	"github.com/pgrealtime/pgrealtime/wsapi/phoenix"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

// BenchmarkSupabaseDeliver is the per-recipient cost on the Supabase
// endpoint: a binding's Deliver (filter, rules, queueing) plus framing the
// event's shared payload as the writer does. The payload itself is encoded
// once per event (BenchmarkChangeData in wsapi/phoenix).
func BenchmarkSupabaseDeliver(b *testing.B) {
	yes := "true"
	set, err := rules.Compile(&rules.Config{Collections: map[string]rules.Collection{"posts": {Read: &yes}}}, DefaultAdminRole)
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Config{Broker: broker.NewMemory(broker.Config{}), Rules: set, SendQueue: 1 << 16, Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	c := s.newConn(nil, "127.0.0.1:1", &auth.Identity{Subject: "u1", Role: "user", Claims: map[string]any{"sub": "u1"}})
	c.ph = &phoenixConn{c: c, vsn: phoenix.V2, channels: map[string]*channel{}}
	ch := &channel{p: c.ph, topic: "realtime:posts", name: "posts"}
	table := "posts"
	bd, _, err := ch.binding(&bindingSpec{Event: "*", Schema: "public", Table: &table}, c.ident.Load())
	if err != nil {
		b.Fatal(err)
	}
	pre, post := phoenix.Envelope(phoenix.V2, nil, ch.topic, phoenix.EventPostgresChanges, []byte(`{"ids":[`), []byte("}"))
	sub := &channelSub{ch: ch, bindings: []binding{bd}, patterns: []broker.Pattern{bd.pattern}, pre: pre, post: post}
	ev := &broker.Event{Kind: broker.KindRecord, Collection: "posts", Action: "create", RecordID: "1", Timestamp: time.Now(),
		ColumnTypes: []broker.ColumnType{{Name: "id", Type: "int8", Key: true}, {Name: "title", Type: "text"}},
		Record:      broker.Row{{Name: "id", Value: int64(1)}, {Name: "title", Value: "hello"}}}
	set.Prepare(ev)
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		sub.Deliver(ev)
		buf = sub.appendFrame(buf[:0], ev)
		if (i+1)%s.cfg.SendQueue == 0 {
			b.StopTimer()
			drain(c)
			b.StartTimer()
		}
	}
	b.StopTimer()
	drain(c)
}
