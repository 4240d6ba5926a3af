package wsapi

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/wsapi/auth"
)

// FuzzHandle feeds arbitrary client frames to the message handler of a
// live connection (admin identity, no rate limits) and checks that it never
// panics, never closes the connection, and answers every frame with exactly
// one well-formed reply: a known type, a known error code, the request's
// string id echoed.
// Run longer with: go test ./wsapi -run '^$' -fuzz FuzzHandle -fuzztime 1m
func FuzzHandle(f *testing.F) {
	for _, s := range []string{
		`{"type":"subscribe","id":"1","topics":["posts.*","comments.42"]}`,
		`{"type":"subscribe","id":"1","topics":["posts"],"since":"0/1000000:1"}`,
		`{"type":"subscribe","topics":["posts"],"since":"0/0:0"}`,
		`{"type":"subscribe","topics":["posts"],"since":"FFFFFFFF/FFFFFFFF:4294967295"}`,
		`{"type":"subscribe","topics":["posts"],"since":"nope"}`,
		`{"type":"subscribe","topics":["posts"],"since":7}`,
		`{"type":"subscribe","id":"1","topics":"posts"}`,
		`{"type":"subscribe","id":"1","topics":[]}`,
		`{"type":"subscribe","id":"1","topics":[1,"a"]}`,
		`{"type":"subscribe","id":"1","topics":null}`,
		`{"type":"subscribe","id":"1","topics":["*","*.x","posts.","", " a"]}`,
		`{"type":"unsubscribe","id":"2","topics":["posts.*","nope"]}`,
		`{"type":"auth","id":"3","token":"a.b.c"}`,
		`{"type":"auth","id":"3","token":""}`,
		`{"type":"auth","id":"3"}`,
		`{"type":"ping","id":"4"}`,
		`{"type":"ping","id":4}`,
		`{"type":"ping","id":null,"extra":{"x":[1]}}`,
		`{"type":"what"}`, `{"type":1}`, `{}`, `null`, `[]`, `"x"`, `{`, ``, `{"type":"ping"} {}`,
		"{\"type\":\"ping\",\"id\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}

	b := broker.NewMemory(broker.Config{HistorySize: 16})
	defer b.Close()
	for i := uint64(1); i <= 3; i++ {
		ev := &broker.Event{Kind: broker.KindRecord, Collection: "posts", Action: broker.ActionCreate, RecordID: "1",
			Record: broker.Row{{Name: "id", Value: int64(1)}}, Timestamp: time.Unix(0, 0), Position: broker.Position{LSN: 0x1000000 * i, Index: 1}}
		if err := b.Append(context.Background(), &broker.Tx{CommitLSN: ev.Position.LSN, EndLSN: ev.Position.LSN + 1, Events: []*broker.Event{ev}}); err != nil {
			f.Fatal(err)
		}
	}
	v, err := auth.NewVerifier(auth.Config{HS256Secret: testSecret})
	if err != nil {
		f.Fatal(err)
	}
	srv, err := New(Config{Broker: b, Verifier: v, Logger: zerolog.Nop(), MaxSubscriptions: 1 << 30})
	if err != nil {
		f.Fatal(err)
	}
	srv.sinceWait = time.Millisecond

	// A real server-side socket for the connection under test.
	ws, _ := socketPair(f)
	req := httptest.NewRequest("GET", "/realtime", nil)
	admin := &auth.Identity{Subject: "root", Role: DefaultAdminRole}
	c := srv.newConn(ws, req.RemoteAddr, admin)
	c.limiter = rate.NewLimiter(rate.Inf, 0)
	c.abuse = rate.NewLimiter(rate.Inf, 0)
	defer b.Remove(c)

	codes := map[string]bool{CodeBadRequest: true, CodeInvalidTopic: true, CodeForbidden: true, CodeTooManySubscriptions: true,
		CodeRateLimited: true, CodeInvalidToken: true, CodeTokenExpired: true, CodeHistoryUnavailable: true}
	replies := map[string]bool{"subscribed": true, "unsubscribed": true, "authenticated": true, "pong": true, "error": true}

	f.Fuzz(func(t *testing.T, data []byte) {
		if len(c.subs) > 1000 { // keep the state small
			for _, s := range c.subs {
				b.Unsubscribe(c, []broker.Pattern{s.pattern})
			}
			c.subs = nil
		}
		c.handle(data)
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
		if len(raw) != 1 {
			t.Fatalf("frame %q: %d replies, want 1: %q", data, len(raw), raw)
		}
		var reply map[string]any
		if err := json.Unmarshal(raw[0], &reply); err != nil {
			t.Fatalf("frame %q: reply is not JSON: %q", data, raw[0])
		}
		typ, _ := reply["type"].(string)
		if !replies[typ] {
			t.Fatalf("frame %q: reply type %q", data, typ)
		}
		if typ == "error" {
			code, _ := reply["code"].(string)
			msg, _ := reply["message"].(string)
			if !codes[code] || msg == "" {
				t.Fatalf("frame %q: error reply %s", data, raw[0])
			}
		}
		var head struct {
			ID any `json:"id"`
		}
		if json.Unmarshal(data, &head) == nil {
			if id, ok := head.ID.(string); ok && json.Valid(data) {
				if rid, _ := reply["id"].(string); rid != strings.ToValidUTF8(id, "\uFFFD") {
					t.Fatalf("frame %q: reply id %q, want %q", data, reply["id"], id)
				}
			}
		}
	})
}
