package wsapi

import (
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
	"github.com/pgrealtime/pgrealtime/wsapi/phoenix"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

// FuzzSupabaseHandle feeds arbitrary frames (text, and binary for 2.0.0)
// to the Supabase session of a live connection and checks that it never
// panics nor closes the connection, that everything it queues is a
// well-formed message of the connection's serializer, and that a frame it
// cannot decode gets one error reply on topic phoenix.
// Run longer with: go test ./wsapi -run '^$' -fuzz FuzzSupabaseHandle -fuzztime 1m
func FuzzSupabaseHandle(f *testing.F) {
	for _, s := range []string{
		`["1","1","realtime:posts","phx_join",{"config":{"broadcast":{"self":true,"ack":true},"presence":{"enabled":true},"postgres_changes":[{"event":"*","schema":"public","table":"posts","filter":"id=eq.1"},{"event":"INSERT","schema":"public"}]}}]`,
		`["1","2","realtime:posts","broadcast",{"type":"broadcast","event":"e","payload":{"x":1}}]`,
		`["1","3","realtime:posts","access_token",{"access_token":"a.b.c"}]`,
		`["1","4","realtime:posts","presence",{"event":"track","payload":{}}]`,
		`["1","5","realtime:posts","phx_leave",{}]`,
		`[null,"6","phoenix","heartbeat",{}]`,
		`[null,"7","realtime:x","phx_join",{"config":{"private":true}}]`,
		`[null,"8","realtime:x","phx_join",{"config":{"postgres_changes":[{"event":"UPSERT"}]}}]`,
		`[null,"9","realtime:x","phx_join",{"config":{"postgres_changes":[{"event":"*","schema":"s","table":"a.b"}]}}]`,
		`[null,null,"t","e",1]`, `[]`, `{}`, `[`, ``, `null`, "[\"\xff\",null,\"t\",\"e\",{}]",
	} {
		f.Add([]byte(s), false)
	}
	f.Add(phoenix.EncodeBinaryPush("1", "2", "realtime:posts", "e", []byte(`{"x":1}`)), true)
	f.Add([]byte{3, 0, 0, 200}, true)

	b := broker.NewMemory(broker.Config{HistorySize: 16})
	defer b.Close()
	v, err := auth.NewVerifier(auth.Config{HS256Secret: testSecret})
	if err != nil {
		f.Fatal(err)
	}
	yes := "true"
	set, err := rules.Compile(&rules.Config{Collections: map[string]rules.Collection{"posts": {Read: &yes, Broadcast: &yes}}}, DefaultAdminRole)
	if err != nil {
		f.Fatal(err)
	}
	srv, err := New(Config{Broker: b, Verifier: v, Rules: set, Logger: zerolog.Nop(), MaxSubscriptions: 1 << 30})
	if err != nil {
		f.Fatal(err)
	}
	ws, _ := socketPair(f)
	c := srv.newConn(ws, "127.0.0.1:1", auth.Anon())
	ph := &phoenixConn{c: c, vsn: phoenix.V2, channels: map[string]*channel{}}
	c.ph = ph
	c.limiter = rate.NewLimiter(rate.Inf, 0)
	c.abuse = rate.NewLimiter(rate.Inf, 0)
	defer ph.closeAll()

	f.Fuzz(func(t *testing.T, data []byte, binary bool) {
		typ := websocket.MessageText
		if binary {
			typ = websocket.MessageBinary
		}
		ph.handle(typ, data)
		select {
		case <-c.done:
			t.Fatalf("frame %q closed the connection", data)
		default:
		}
		var raw [][]byte
		for it, ok := c.pop(); ok; it, ok = c.pop() {
			if it.raw != nil {
				raw = append(raw, it.raw)
			}
		}
		for _, r := range raw {
			if _, err := phoenix.Decode(phoenix.V2, r); err != nil {
				t.Fatalf("frame %q: queued %q, not a 2.0.0 message: %v", data, r, err)
			}
		}
		var derr error
		if binary {
			_, derr = phoenix.DecodeBinary(data)
		} else {
			_, derr = phoenix.Decode(phoenix.V2, data)
		}
		if derr != nil {
			if len(raw) != 1 {
				t.Fatalf("undecodable frame %q: %d replies, want 1", data, len(raw))
			}
			m, _ := phoenix.Decode(phoenix.V2, raw[0])
			if m.Topic != phoenix.TopicPhoenix || !strings.Contains(string(m.Payload), `"status":"error"`) {
				t.Fatalf("undecodable frame %q: reply %q", data, raw[0])
			}
		}
		if len(ph.channels) > 50 { // keep the state small
			ph.closeAll()
			ph.mu.Lock()
			ph.closed = false
			ph.mu.Unlock()
		}
	})
}
