package wsapi

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/wsapi/phoenix"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

// hubBroker serves the WebSocket server from a broker.Hub fed by the test,
// as a cluster node's Hub is fed by its stream reader.
type hubBroker struct{ *broker.Hub }

func (b hubBroker) PublishLive(_ context.Context, ev *broker.Event) error {
	b.ApplyLive(ev)
	return nil
}

// A stream discontinuity on the node (Hub.Reset) closes every connection,
// of /realtime and of the Supabase endpoint, with 1001; the client's resume
// from before the reset gets history_unavailable, and from the new base it
// gets what follows.
func TestResyncClosesWith1001AndResumeBeforeTheResetIsUnavailable(t *testing.T) {
	yes := "true"
	h := broker.NewHub(broker.HubConfig{HistorySize: 100})
	t.Cleanup(func() { h.Close() })
	start := broker.Position{LSN: 0x1000000}
	h.Reset(start) // a fresh node knows its base before it loads
	e := newEnv(t, envOpts{
		noBase: true,
		rules:  &rules.Config{Collections: map[string]rules.Collection{"posts": {Read: &yes}}},
		cfg:    func(c *Config) { c.Broker = hubBroker{h} },
	})

	c := e.dial(adminToken(t))
	if got := c.sub("posts").str("position"); got != start.String() {
		t.Fatalf("subscribed at %s, want %s", got, start)
	}
	px := e.dialPhoenix("vsn=1.0.0")
	if st, resp := px.reply(px.push("realtime:posts", phoenix.EventJoin, join(map[string]any{"event": "*", "schema": "public", "table": "posts"}))); st != "ok" {
		t.Fatalf("join: %s %v", st, resp)
	}
	for m := px.read(); m.Event != phoenix.EventSystem; m = px.read() {
	}

	first := rec("posts", broker.ActionCreate, "1")
	first.Position = broker.Position{LSN: 0x1000100, Index: 1}
	first.Timestamp = time.Now().UTC()
	h.Apply(start, []*broker.Event{first})
	m := c.read()
	if m.str("type") != "record_event" || m.str("position") != first.Position.String() {
		t.Fatalf("before the reset: got %v", m)
	}
	seen := m.str("position")
	if m := px.read(); m.Event != "postgres_changes" {
		t.Fatalf("Supabase client before the reset: got %s %s", m.Event, m.Payload)
	}

	// Redis lost entries: the stream goes on from a base this node never saw.
	reset := broker.Position{LSN: 0x2000000}
	h.Reset(reset)
	if code, reason := c.expectClose(10 * time.Second); code != StatusGoingAway || reason != resyncReason {
		t.Fatalf("/realtime closed with %d %q, want 1001 %q", code, reason, resyncReason)
	}
	if code := pxCloseStatus(t, px); code != StatusGoingAway {
		t.Fatalf("Supabase connection closed with %d, want 1001", code)
	}

	c2 := e.dial(adminToken(t))
	r := c2.expectError(msg{"type": "subscribe", "topics": []string{"posts"}, "since": seen}, CodeHistoryUnavailable)
	if !strings.Contains(r.str("message"), "history unavailable") {
		t.Fatalf("message %q", r.str("message"))
	}
	// Nothing was subscribed by the failed resume; from the new base the
	// client resumes exactly.
	if got := c2.sub("posts").str("position"); got != reset.String() {
		t.Fatalf("subscribed at %s after the reset, want %s", got, reset)
	}
	next := rec("posts", broker.ActionCreate, "2")
	next.Position = broker.Position{LSN: 0x2000100, Index: 1}
	next.Timestamp = time.Now().UTC()
	h.Apply(reset, []*broker.Event{next})
	if m := c2.read(); m.str("type") != "record_event" || m.str("position") != next.Position.String() {
		t.Fatalf("after the reset: got %v", m)
	}
	c3 := e.dial(adminToken(t))
	r3, _ := c3.request(msg{"type": "subscribe", "topics": []string{"posts"}, "since": reset.String()})
	if r3.str("type") != "subscribed" {
		t.Fatalf("resume from the new base: %v", r3)
	}
	if got := positions(c3.sync()); len(got) != 1 || got[0] != next.Position.String() {
		t.Fatalf("resume from the new base replayed %v, want [%s]", got, next.Position)
	}
}

// pxCloseStatus reads the Supabase client until its connection closes.
func pxCloseStatus(t *testing.T, c *pxClient) websocket.StatusCode {
	t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	for {
		if _, _, err := c.ws.Read(ctx); err != nil {
			var ce websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("connection ended without a close frame: %v", err)
			}
			return ce.Code
		}
	}
}
