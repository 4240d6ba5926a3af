package wsapi

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
	"github.com/pgrealtime/pgrealtime/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func TestConnectedFrame(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *Config) { c.MaxSubscriptions = 7; c.SubscribeRate = 3; c.MaxMessageBytes = 4096 }})
	c := e.dial("")
	m := c.connected
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(m.str("connection_id")) {
		t.Errorf("connection_id = %q", m.str("connection_id"))
	}
	st, err := time.Parse("2006-01-02T15:04:05.000Z", m.str("server_time"))
	if err != nil || time.Since(st) > time.Minute || time.Since(st) < -time.Minute {
		t.Errorf("server_time = %q (%v)", m.str("server_time"), err)
	}
	lim, _ := m["limits"].(map[string]any)
	if lim["max_subscriptions"] != 7.0 || lim["subscribe_rate"] != 3.0 || lim["max_message_bytes"] != 4096.0 {
		t.Errorf("limits = %v", lim)
	}
	other := e.dial("")
	if other.connected.str("connection_id") == m.str("connection_id") {
		t.Error("two connections share a connection_id")
	}
}

func TestPingEchoesID(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.dial("")
	c.send(`{"type":"ping","id":"abc"}`)
	if r := c.read(); r.str("type") != "pong" || r.str("id") != "abc" {
		t.Fatalf("got %v", r)
	}
	c.send(`{"type":"ping"}`)
	r := c.read()
	if _, has := r["id"]; r.str("type") != "pong" || has {
		t.Fatalf("ping without id: got %v", r)
	}
}

func TestBadRequest(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.dial(adminToken(t))
	for _, tc := range []struct{ name, frame, id string }{
		{"not json", `hello`, ""},
		{"not an object", `[1,2]`, ""},
		{"null", `null`, ""},
		{"a string", `"subscribe"`, ""},
		{"unknown type", `{"type":"subscrbe","id":"1","topics":["a"]}`, "1"},
		{"missing type", `{"id":"2"}`, "2"},
		{"missing topics", `{"type":"subscribe","id":"3"}`, "3"},
		{"empty topics", `{"type":"subscribe","id":"4","topics":[]}`, "4"},
		{"topics not strings", `{"type":"subscribe","id":"5","topics":[1]}`, "5"},
		{"unsubscribe missing topics", `{"type":"unsubscribe","id":"6"}`, "6"},
		{"auth missing token", `{"type":"auth","id":"7"}`, "7"},
		{"bad since", `{"type":"subscribe","id":"8","topics":["a"],"since":"yesterday"}`, "8"},
		{"id not a string", `{"type":"ping","id":5}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.send(tc.frame)
			r := c.read()
			if r.str("type") != "error" || r.str("code") != "bad_request" || r.str("message") == "" || r.str("id") != tc.id {
				t.Fatalf("got %v", r)
			}
			if tc.frame[0] != '{' && r.str("message") != "message is not a JSON object" {
				t.Fatalf("%s: message %q, want %q", tc.frame, r.str("message"), "message is not a JSON object")
			}
		})
	}
	// The connection is still usable and nothing was subscribed.
	e.publish(rec("a", "create", "1"))
	if evs := c.sync(); len(evs) != 0 {
		t.Fatalf("bad subscribe subscribed: %v", evs)
	}
}

func TestAbuseCloses1008(t *testing.T) {
	e := newEnv(t, envOpts{})
	t.Run("bad requests", func(t *testing.T) {
		c := e.dial("")
		for i := 0; i < 40; i++ {
			if err := c.ws.Write(e.ctx, websocket.MessageText, []byte("nope")); err != nil {
				break
			}
		}
		if code, _ := c.expectClose(10 * time.Second); code != websocket.StatusPolicyViolation {
			t.Fatalf("close code %d, want 1008", code)
		}
	})
	t.Run("a few bad requests are fine", func(t *testing.T) {
		c := e.dial("")
		for i := 0; i < 5; i++ {
			c.send("nope")
			c.read()
		}
		c.sync()
	})
	t.Run("binary frame", func(t *testing.T) {
		c := e.dial("")
		c.ws.Write(e.ctx, websocket.MessageBinary, []byte(`{"type":"ping"}`))
		if code, _ := c.expectClose(10 * time.Second); code != websocket.StatusPolicyViolation {
			t.Fatalf("close code %d, want 1008", code)
		}
	})
}

func TestOversizedFrame1009(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *Config) { c.MaxMessageBytes = 1024 }})
	c := e.dial("")
	// A frame just under the limit is fine.
	ok := fmt.Sprintf(`{"type":"ping","id":"%s"}`, strings.Repeat("x", 990))
	c.send(ok)
	if r := c.read(); r.str("type") != "pong" {
		t.Fatalf("got %v", r)
	}
	c.send(fmt.Sprintf(`{"type":"ping","id":"%s"}`, strings.Repeat("x", 2000)))
	if code, _ := c.expectClose(10 * time.Second); code != websocket.StatusMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
}

func TestSubscribeReplyAndEvents(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.dial(adminToken(t))
	// Before the first event: the stream's start position.
	r := c.sub("posts.*", "comments.42")
	if got := r.str("position"); got != "0/1000000:0" {
		t.Fatalf("position before any event: %v, want the stream's start 0/1000000:0", r)
	}
	if got := r.strs("topics"); strings.Join(got, " ") != "posts.* comments.42" {
		t.Fatalf("topics = %v", got)
	}
	evs := e.publish(rec("posts", "create", "1", "title", "a"), rec("comments", "update", "42"), rec("comments", "update", "43"), rec("other", "create", "1"))
	got := c.sync()
	if want := []string{evs[0].Position.String(), evs[1].Position.String()}; strings.Join(positions(got), " ") != strings.Join(want, " ") {
		t.Fatalf("positions %v, want %v", positions(got), want)
	}
	if string(mustJSON(got[0])) == "" || got[0].str("type") != "record_event" || got[0].str("collection") != "posts" {
		t.Fatalf("event %v", got[0])
	}
	// The position in subscribed is the last published event.
	r = c.sub("other")
	if r.str("position") != evs[3].Position.String() {
		t.Fatalf("position %q, want %q", r.str("position"), evs[3].Position)
	}
	// Topics are echoed as written.
	r = c.sub("posts")
	if got := r.strs("topics"); len(got) != 1 || got[0] != "posts" {
		t.Fatalf("topics = %v", got)
	}
}

// The event bytes written to the socket are the broker's shared encoding.
func TestEventBytesAreShared(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.dial(adminToken(t))
	c.sub("posts")
	ev := e.publish(rec("posts", "create", "1", "title", "x"))[0]
	_, b, err := c.ws.Read(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != string(ev.JSON) {
		t.Fatalf("frame %s\nwant  %s", b, ev.JSON)
	}
}

func TestInvalidTopics(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.dial(adminToken(t))
	for _, topic := range []string{"", " ", "posts.", "*.x", "po*sts", "a b", ".x", strings.Repeat("a", 257)} {
		r := c.expectError(msg{"type": "subscribe", "topics": []string{"ok", topic}}, "invalid_topic")
		if r.str("topic") != topic {
			t.Errorf("topic %q: error names %q", topic, r.str("topic"))
		}
	}
	// All or nothing: "ok" was not added by any of the failed requests.
	e.publish(rec("ok", "create", "1"))
	if evs := c.sync(); len(evs) != 0 {
		t.Fatalf("failed subscribe added a topic: %v", evs)
	}
	// Valid ones.
	c.sub("*", "posts", "posts.*", "posts.1.2", "a:b.x")
	c.expectError(msg{"type": "unsubscribe", "topics": []string{"posts."}}, "invalid_topic")
}

func TestForbiddenAllOrNothing(t *testing.T) {
	e := newEnv(t, envOpts{}) // no rules: only the admin role reads
	user := e.dial(token(t, "u1", "user", time.Hour))
	r := user.expectError(msg{"type": "subscribe", "topics": []string{"posts"}}, "forbidden")
	if r.str("topic") != "posts" {
		t.Fatalf("error names %q", r.str("topic"))
	}
	r = user.expectError(msg{"type": "subscribe", "topics": []string{"*"}}, "forbidden")
	if r.str("topic") != "*" {
		t.Fatalf("error names %q", r.str("topic"))
	}
	anon := e.dial("")
	anon.expectError(msg{"type": "subscribe", "topics": []string{"*"}}, "forbidden")
	admin := e.dial(adminToken(t))
	admin.sub("*")
	e.publish(rec("posts", "create", "1"))
	if n := len(admin.sync()); n != 1 {
		t.Fatalf("admin got %d events", n)
	}
	if n := len(user.sync()) + len(anon.sync()); n != 0 {
		t.Fatalf("refused clients got %d events", n)
	}
}

func TestResubscribeAndOverlap(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.dial(adminToken(t))
	c.sub("posts")
	r := c.sub("posts", "posts.*", "posts.1", "*", "posts.1")
	if got := r.strs("topics"); len(got) != 5 {
		t.Fatalf("topics = %v", got)
	}
	if n := counterValue(t, metrics.Subscriptions); n < 3 {
		t.Fatalf("subscriptions gauge %v", n)
	}
	e.publish(rec("posts", "create", "1"), rec("posts", "update", "2"), rec("x", "delete", "9"))
	got := c.sync()
	if len(got) != 3 {
		t.Fatalf("got %d events, want 3 (one per event): %v", len(got), positions(got))
	}
	// Unsubscribing one overlapping pattern keeps the others; unknown topics are fine.
	r, _ = c.request(msg{"type": "unsubscribe", "topics": []string{"*", "nothing.here"}})
	if r.str("type") != "unsubscribed" || strings.Join(r.strs("topics"), " ") != "* nothing.here" {
		t.Fatalf("got %v", r)
	}
	e.publish(rec("posts", "create", "1"), rec("x", "delete", "9"))
	if got := c.sync(); len(got) != 1 || got[0].str("collection") != "posts" {
		t.Fatalf("after unsubscribe * got %v", got)
	}
	// "posts" and "posts.*" are the same subscription.
	c.request(msg{"type": "unsubscribe", "topics": []string{"posts.*", "posts.1"}})
	e.publish(rec("posts", "create", "1"))
	if got := c.sync(); len(got) != 0 {
		t.Fatalf("after unsubscribe got %v", got)
	}
}

func TestKeyChangeDeliveredToOldAndNewID(t *testing.T) {
	e := newEnv(t, envOpts{})
	oldSub, newSub, both, coll := e.dial(adminToken(t)), e.dial(adminToken(t)), e.dial(adminToken(t)), e.dial(adminToken(t))
	oldSub.sub("posts.1")
	newSub.sub("posts.2")
	both.sub("posts.1", "posts.2")
	coll.sub("posts", "posts.1", "posts.2")
	ev := rec("posts", "update", "2", "title", "moved")
	ev.OldRecordID = "1"
	ev.OldRecord = broker.Row{{Name: "id", Value: "1"}}
	e.publish(ev, rec("posts", "update", "3"))
	for name, c := range map[string]*client{"old": oldSub, "new": newSub, "both": both} {
		got := c.sync()
		if len(got) != 1 || got[0].str("record_id") != "2" || got[0]["old_record"] == nil {
			t.Errorf("%s subscriber got %v", name, got)
		}
	}
	if got := coll.sync(); len(got) != 2 {
		t.Errorf("collection subscriber got %d events, want 2", len(got))
	}
}

func TestMaxSubscriptions(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *Config) { c.MaxSubscriptions = 3 }})
	c := e.dial(adminToken(t))
	c.sub("a", "b")
	r := c.expectError(msg{"type": "subscribe", "topics": []string{"a", "c", "d"}}, "too_many_subscriptions")
	if r.str("topic") != "d" {
		t.Fatalf("error names %q, want d", r.str("topic"))
	}
	// All or nothing: c was not added.
	e.publish(rec("c", "create", "1"))
	if got := c.sync(); len(got) != 0 {
		t.Fatalf("got %v", got)
	}
	c.sub("a", "c") // a is a no-op
	c.expectError(msg{"type": "subscribe", "topics": []string{"d"}}, "too_many_subscriptions")
	c.request(msg{"type": "unsubscribe", "topics": []string{"a"}})
	c.sub("d")
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *Config) { c.SubscribeRate = 2 }})
	c := e.dial(adminToken(t))
	before := counterValue(t, metrics.RateLimited)
	c.sub("a")
	c.request(msg{"type": "unsubscribe", "topics": []string{"a"}})
	c.expectError(msg{"type": "subscribe", "topics": []string{"b"}}, "rate_limited")
	c.expectError(msg{"type": "unsubscribe", "topics": []string{"b"}}, "rate_limited")
	// ping and auth are not limited.
	c.sync()
	if r, _ := c.request(msg{"type": "auth", "token": adminToken(t)}); r.str("type") != "authenticated" {
		t.Fatalf("auth: %v", r)
	}
	if got := counterValue(t, metrics.RateLimited) - before; got < 2 {
		t.Fatalf("rate_limited metric grew by %v", got)
	}
	// b was not subscribed.
	e.publish(rec("b", "create", "1"))
	if got := c.sync(); len(got) != 0 {
		t.Fatalf("got %v", got)
	}
	// The bucket refills at 2/s.
	time.Sleep(600 * time.Millisecond)
	c.sub("b")
}

func TestMaxConnections503(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *Config) { c.MaxConnections = 2 }})
	a := e.dial("")
	e.dial("")
	_, resp, err := e.dialRaw(dialOpt{})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third connection: err %v resp %v", err, resp)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}
	a.ws.Close(websocket.StatusNormalClosure, "")
	e.waitFor("a slot to free", func() bool { return e.srv.count.Load() < 2 })
	e.dial("")
}

func TestOrigins(t *testing.T) {
	cases := []struct {
		allowed []string
		origin  string
		ok      bool
	}{
		{nil, "", true},
		{nil, "SAME", true},
		{nil, "http://evil.example", false},
		{nil, "null", false},
		{[]string{"*"}, "http://evil.example", true},
		{[]string{"*.example.com"}, "https://app.example.com", true},
		{[]string{"*.example.com"}, "https://app.example.com:8443", true},
		{[]string{"*.example.com"}, "https://example.com", false},
		{[]string{"*.example.com"}, "https://example.com.evil.net", false},
		{[]string{"*.example.com"}, "SAME", true},
		{[]string{"https://app.test"}, "https://app.test", true},
		{[]string{"https://app.test"}, "http://app.test", false},
		{[]string{"https://app.test"}, "https://app.test:444", false},
		{[]string{"app.test"}, "http://app.test", true},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%v/%s", tc.allowed, tc.origin), func(t *testing.T) {
			e := newEnv(t, envOpts{cfg: func(c *Config) { c.AllowedOrigins = tc.allowed }})
			h := http.Header{}
			switch tc.origin {
			case "":
			case "SAME":
				h.Set("Origin", e.hs.URL)
			default:
				h.Set("Origin", tc.origin)
			}
			ws, resp, err := e.dialRaw(dialOpt{header: h})
			if tc.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				e.wrap(ws)
				return
			}
			if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Fatalf("not refused with 403: err %v resp %v", err, resp)
			}
		})
	}
	if _, err := New(Config{Broker: broker.NewMemory(broker.Config{}), AllowedOrigins: []string{"[bad"}}); err == nil {
		t.Error("New accepted a malformed origin pattern")
	}
}
