package wsapi

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/wsapi/phoenix"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

// pxClient is a Phoenix client of the Supabase endpoint (serializer 2.0.0
// unless dialed with 1.0.0).
type pxClient struct {
	t   *testing.T
	ctx context.Context
	ws  *websocket.Conn
	vsn phoenix.Vsn
	ref int
}

func (e *env) dialPhoenix(query string) *pxClient {
	e.t.Helper()
	u := "ws" + strings.TrimPrefix(e.hs.URL, "http") + SupabasePath + "?" + query
	ws, _, err := websocket.Dial(e.ctx, u, nil)
	if err != nil {
		e.t.Fatalf("dial %s: %v", u, err)
	}
	e.t.Cleanup(func() { ws.CloseNow() })
	vsn := phoenix.V1
	if strings.Contains(query, "vsn=2.0.0") {
		vsn = phoenix.V2
	}
	return &pxClient{t: e.t, ctx: e.ctx, ws: ws, vsn: vsn}
}

func (c *pxClient) push(topic, event string, payload any) string {
	c.t.Helper()
	c.ref++
	ref := fmt.Sprint(c.ref)
	p, _ := json.Marshal(payload)
	c.raw(phoenix.AppendMessage(nil, c.vsn, &ref, &ref, topic, event, p))
	return ref
}

func (c *pxClient) raw(b []byte) {
	c.t.Helper()
	if err := c.ws.Write(c.ctx, websocket.MessageText, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *pxClient) read() *phoenix.Message {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
	defer cancel()
	_, b, err := c.ws.Read(ctx)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	m, err := phoenix.Decode(c.vsn, b)
	if err != nil {
		c.t.Fatalf("server frame %s: %v", b, err)
	}
	return m
}

// reply reads until the reply to ref and returns its status and response.
func (c *pxClient) reply(ref string) (string, map[string]any) {
	c.t.Helper()
	for {
		m := c.read()
		if m.Event == phoenix.EventReply && m.Ref != nil && *m.Ref == ref {
			var r struct {
				Status   string         `json:"status"`
				Response map[string]any `json:"response"`
			}
			if err := json.Unmarshal(m.Payload, &r); err != nil {
				c.t.Fatal(err)
			}
			return r.Status, r.Response
		}
	}
}

func join(bindings ...map[string]any) map[string]any {
	if bindings == nil {
		bindings = []map[string]any{}
	}
	return map[string]any{"config": map[string]any{"postgres_changes": bindings}}
}

func TestSupabaseHeartbeatAndBadFrames(t *testing.T) {
	e := newEnv(t, envOpts{})
	for _, vsn := range []string{"1.0.0", "2.0.0"} {
		c := e.dialPhoenix("vsn=" + vsn)
		if st, _ := c.reply(c.push("phoenix", "heartbeat", map[string]any{})); st != "ok" {
			t.Fatalf("%s heartbeat: %s", vsn, st)
		}
		// Each bad frame gets an error on the phoenix topic saying what is
		// wrong; the connection stays usable.
		frames := map[string]string{
			`[nope`:                  "not a JSON array",
			`["1","1","t"]`:          "want 5",
			`{"topic":"t"}`:          "2.0.0 frames are JSON arrays",
			`[null,null,"t","e",[]]`: "payload must be a JSON object",
		}
		if vsn == "1.0.0" {
			frames = map[string]string{
				`{nope`:                   "not a JSON object",
				`["1","1","t"]`:           "1.0.0 frames are JSON objects",
				`{"topic":"t"}`:           "missing event",
				`{"topic":"t","event":1}`: "event must be a string",
			}
		}
		for frame, want := range frames {
			c.raw([]byte(frame))
			m := c.read()
			if m.Topic != "phoenix" || m.Event != phoenix.EventReply || !strings.Contains(string(m.Payload), `"status":"error"`) || !strings.Contains(string(m.Payload), "bad frame") || !strings.Contains(string(m.Payload), want) {
				t.Fatalf("%s: frame %s: got %s %s %s", vsn, frame, m.Topic, m.Event, m.Payload)
			}
		}
		if st, resp := c.reply(c.push("realtime:nowhere", "broadcast", map[string]any{})); st != "error" || !strings.Contains(fmt.Sprint(resp), "unmatched topic") {
			t.Fatalf("%s: push to a topic not joined: %s %v", vsn, st, resp)
		}
		if vsn == "1.0.0" {
			if err := c.ws.Write(c.ctx, websocket.MessageBinary, phoenix.EncodeBinaryPush("", "", "t", "e", []byte("{}"))); err != nil {
				t.Fatal(err)
			}
			if m := c.read(); !strings.Contains(string(m.Payload), "binary frames need serializer 2.0.0") {
				t.Fatalf("binary frame on 1.0.0: %s", m.Payload)
			}
		}
		if st, _ := c.reply(c.push("phoenix", "heartbeat", map[string]any{})); st != "ok" {
			t.Fatalf("%s heartbeat after bad frames: %s", vsn, st)
		}
	}
	// A flood of bad frames closes with 1008, like /realtime.
	c := e.dialPhoenix("vsn=2.0.0")
	for i := 0; i < abuseBurst+5; i++ {
		if err := c.ws.Write(c.ctx, websocket.MessageText, []byte("x")); err != nil {
			break
		}
	}
	cl := &client{t: t, ctx: e.ctx, ws: c.ws}
	if code, _ := cl.expectClose(10 * time.Second); code != StatusPolicyViolation {
		t.Fatalf("close code %d, want 1008", code)
	}
	_, resp, err := websocket.Dial(e.ctx, "ws"+strings.TrimPrefix(e.hs.URL, "http")+SupabasePath+"?vsn=3.0.0", nil)
	if err == nil || resp == nil || resp.StatusCode != 400 {
		t.Fatalf("vsn 3.0.0: %v %v, want HTTP 400", err, resp)
	}
}

func TestSupabaseJoinErrors(t *testing.T) {
	read := "auth.sub == record.owner"
	e := newEnv(t, envOpts{rules: &rules.Config{Collections: map[string]rules.Collection{"notes": {Read: &read}}}})
	c := e.dialPhoenix("vsn=2.0.0&apikey=" + token(t, "ann", "authenticated", time.Hour))
	table := func(s string) map[string]any { return map[string]any{"event": "*", "schema": "public", "table": s} }
	for name, tc := range map[string]struct {
		payload map[string]any
		want    string
	}{
		"forged token":    {map[string]any{"access_token": "e30.e30.x", "config": map[string]any{}}, "invalid token"},
		"forbidden table": {join(table("posts")), "not allowed to read public.posts"},
		"bad event":       {join(map[string]any{"event": "UPSERT", "schema": "public", "table": "notes"}), `want "*", "INSERT", "UPDATE" or "DELETE"`},
		"no schema":       {join(map[string]any{"event": "*", "table": "notes"}), `"schema" is required`},
		"private":         {map[string]any{"config": map[string]any{"private": true}}, "private channels are not supported"},
		"bad payload":     {map[string]any{"config": map[string]any{"postgres_changes": "x"}}, "bad join payload"},
	} {
		st, resp := c.reply(c.push("realtime:"+strings.ReplaceAll(name, " ", "-"), phoenix.EventJoin, tc.payload))
		if st != "error" || !strings.Contains(fmt.Sprint(resp["reason"]), tc.want) {
			t.Errorf("%s: %s %v, want error containing %q", name, st, resp, tc.want)
		}
	}
	// The apikey's identity reads notes; a forged apikey is an error.
	if st, resp := c.reply(c.push("realtime:ok", phoenix.EventJoin, join(table("notes")))); st != "ok" {
		t.Fatalf("join notes as ann: %s %v", st, resp)
	}
	bad := e.dialPhoenix("vsn=1.0.0&apikey=not.a.jwt")
	if st, resp := bad.reply(bad.push("realtime:x", phoenix.EventJoin, join())); st != "error" || !strings.Contains(fmt.Sprint(resp), "invalid token") {
		t.Fatalf("forged apikey: %s %v", st, resp)
	}
}

// TestSupabaseJoinNoGap: while events are published without pause, the
// join reply (ids in request order) and "Subscribed to PostgreSQL" come
// first, then a contiguous run of events up to the last one: nothing after
// the system message is missed.
func TestSupabaseJoinNoGap(t *testing.T) {
	yes := "true"
	e := newEnv(t, envOpts{rules: &rules.Config{Collections: map[string]rules.Collection{"posts": {Read: &yes}, "audit:logins": {Read: &yes}}}})
	c := e.dialPhoenix("vsn=2.0.0")
	// The publisher runs until the join is answered, then publishes one
	// more event: the last one the client must see.
	var (
		wg      sync.WaitGroup
		last    int
		stop    = make(chan struct{})
		started = make(chan struct{})
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			e.publish(rec("posts", broker.ActionCreate, fmt.Sprint(i)))
			if i == 20 {
				close(started)
			}
			select {
			case <-stop:
				if i > 20 {
					e.publish(rec("posts", broker.ActionCreate, fmt.Sprint(i+1)))
					last = i + 1
					return
				}
			default:
			}
		}
	}()
	<-started
	b1 := map[string]any{"event": "INSERT", "schema": "public", "table": "posts"}
	b2 := map[string]any{"event": "*", "schema": "audit", "table": "logins"}
	ref := c.push("realtime:feed", phoenix.EventJoin, join(b1, b2))
	m := c.read()
	if m.Event != phoenix.EventReply || *m.Ref != ref {
		t.Fatalf("first frame %s %s, want the join reply", m.Event, m.Payload)
	}
	var r struct {
		Status   string `json:"status"`
		Response struct {
			PostgresChanges []bindingSpec `json:"postgres_changes"`
		} `json:"response"`
	}
	json.Unmarshal(m.Payload, &r)
	pc := r.Response.PostgresChanges
	if r.Status != "ok" || len(pc) != 2 || pc[0].Event != "INSERT" || *pc[0].Table != "posts" || pc[1].Schema != "audit" || pc[0].ID == pc[1].ID {
		t.Fatalf("join reply %s", m.Payload)
	}
	if m = c.read(); m.Event != phoenix.EventSystem || !strings.Contains(string(m.Payload), `"message":"Subscribed to PostgreSQL"`) ||
		!strings.Contains(string(m.Payload), `"channel":"feed"`) {
		t.Fatalf("second frame %s %s, want the system message", m.Event, m.Payload)
	}
	close(stop)
	wg.Wait()
	var ids []int
	for len(ids) == 0 || ids[len(ids)-1] != last {
		m = c.read()
		var p struct {
			IDs  []uint32 `json:"ids"`
			Data struct {
				Type   string         `json:"type"`
				Record map[string]any `json:"record"`
			} `json:"data"`
		}
		if err := json.Unmarshal(m.Payload, &p); err != nil || m.Event != phoenix.EventPostgresChanges || *m.JoinRef != ref {
			t.Fatalf("frame %s %s", m.Event, m.Payload)
		}
		if len(p.IDs) != 1 || p.IDs[0] != pc[0].ID || p.Data.Type != "INSERT" {
			t.Fatalf("event %s: ids must be the INSERT binding's (%d)", m.Payload, pc[0].ID)
		}
		var id int
		fmt.Sscan(fmt.Sprint(p.Data.Record["id"]), &id)
		ids = append(ids, id)
	}
	t.Logf("%d events after the system message, %d to %d", len(ids), ids[0], last)
	for i := 1; i < len(ids); i++ {
		if ids[i] != ids[i-1]+1 {
			t.Fatalf("gap after the system message: %d then %d", ids[i-1], ids[i])
		}
	}
	// Leaving stops the events.
	if st, _ := c.reply(c.push("realtime:feed", phoenix.EventLeave, map[string]any{})); st != "ok" {
		t.Fatalf("leave: %s", st)
	}
	e.publish(rec("posts", broker.ActionCreate, "after-leave"))
	if st, _ := c.reply(c.push("phoenix", "heartbeat", map[string]any{})); st != "ok" {
		t.Fatal("heartbeat")
	}
}

// TestSupabaseEncodedOnce: the Supabase payload of an event is made once
// and shared by every channel that receives it.
func TestSupabaseEncodedOnce(t *testing.T) {
	yes := "true"
	e := newEnv(t, envOpts{rules: &rules.Config{Collections: map[string]rules.Collection{"posts": {Read: &yes}}}})
	var clients []*pxClient
	for _, vsn := range []string{"1.0.0", "2.0.0"} {
		c := e.dialPhoenix("vsn=" + vsn)
		ref := c.push("realtime:a", phoenix.EventJoin, join(map[string]any{"event": "*", "schema": "public", "table": "posts"}))
		if st, _ := c.reply(ref); st != "ok" {
			t.Fatal(st)
		}
		clients = append(clients, c)
	}
	ev := e.publish(rec("posts", broker.ActionCreate, "1", "title", "x"))[0]
	var first []byte
	for _, c := range clients {
		for {
			m := c.read()
			if m.Event == phoenix.EventPostgresChanges {
				var p struct{ Data json.RawMessage }
				json.Unmarshal(m.Payload, &p)
				if first == nil {
					first = p.Data
				} else if string(first) != string(p.Data) {
					t.Fatalf("data differs between serializers: %s / %s", first, p.Data)
				}
				break
			}
		}
	}
	ev.AltEncoding(func(*broker.Event) []byte { t.Fatal("encoded again: not cached on the event"); return nil })
}

// TestSupabaseAccessToken: a refused access_token leaves the identity as
// it was; a token that may no longer read a binding closes its channel
// (system error, then phx_close) and the events stop.
func TestSupabaseAccessToken(t *testing.T) {
	read := "auth.role == 'user'"
	e := newEnv(t, envOpts{rules: &rules.Config{Collections: map[string]rules.Collection{"posts": {Read: &read}}}})
	c := e.dialPhoenix("vsn=2.0.0&apikey=" + token(t, "ann", "user", time.Hour))
	ref := c.push("realtime:p", phoenix.EventJoin, join(map[string]any{"event": "*", "schema": "public", "table": "posts"}))
	if st, resp := c.reply(ref); st != "ok" {
		t.Fatalf("join: %v", resp)
	}
	if st, resp := c.reply(c.push("realtime:p", phoenix.EventAccessToken, map[string]any{"access_token": "forged.token.x"})); st != "error" || !strings.Contains(fmt.Sprint(resp), "access_token refused") {
		t.Fatalf("forged access_token: %s %v", st, resp)
	}
	e.publish(rec("posts", broker.ActionCreate, "1"))
	for m := c.read(); m.Event != phoenix.EventPostgresChanges; m = c.read() {
	}
	ref = c.push("realtime:p", phoenix.EventAccessToken, map[string]any{"access_token": token(t, "ann", "guest", time.Hour)})
	var sawError, sawClose bool
	for {
		m := c.read()
		if m.Event == phoenix.EventSystem && strings.Contains(string(m.Payload), `"status":"error"`) && strings.Contains(string(m.Payload), "may not read posts") {
			sawError = true
		}
		if m.Event == phoenix.EventClose && m.Topic == "realtime:p" {
			sawClose = true
		}
		if m.Event == phoenix.EventReply && *m.Ref == ref {
			break
		}
	}
	if !sawError || !sawClose {
		t.Fatalf("revoked channel: system error %v, phx_close %v", sawError, sawClose)
	}
	e.publish(rec("posts", broker.ActionCreate, "2"))
	c.push("phoenix", "heartbeat", map[string]any{})
	if m := c.read(); m.Event != phoenix.EventReply || m.Topic != "phoenix" {
		t.Fatalf("after the revocation: %s %s, want only the heartbeat reply", m.Event, m.Payload)
	}
	if st, resp := c.reply(c.push("realtime:p", phoenix.EventLeave, map[string]any{})); st != "error" || !strings.Contains(fmt.Sprint(resp), "unmatched topic") {
		t.Fatalf("the channel is gone: %s %v", st, resp)
	}
}

// wsBroker is the type of Config.Broker.
type wsBroker interface {
	broker.Subscriptions
	broker.LivePublisher
}

// gatedBroker holds Subscribe until its gate opens and records when the
// subscription took effect.
type gatedBroker struct {
	wsBroker
	gate chan struct{}
	live atomic.Bool
}

func (g *gatedBroker) Subscribe(ctx context.Context, sub broker.Subscriber, p []broker.Pattern, since *broker.Position) (broker.Position, error) {
	<-g.gate
	pos, err := g.wsBroker.Subscribe(ctx, sub, p, since)
	g.live.Store(err == nil)
	return pos, err
}

// TestSupabaseSubscribedMeansLive: "Subscribed to PostgreSQL" (and the
// join reply) reach the client only once the subscription is live, so an
// event committed after the client saw it is delivered (Supabase's own
// server sends it before; supabase/realtime-js issue 525).
func TestSupabaseSubscribedMeansLive(t *testing.T) {
	yes := "true"
	g := &gatedBroker{gate: make(chan struct{})}
	e := newEnv(t, envOpts{
		rules: &rules.Config{Collections: map[string]rules.Collection{"posts": {Read: &yes}}},
		cfg:   func(c *Config) { g.wsBroker = c.Broker; c.Broker = g },
	})
	c := e.dialPhoenix("vsn=1.0.0")
	c.push("realtime:live", phoenix.EventJoin, join(map[string]any{"event": "*", "schema": "public", "table": "posts"}))
	time.AfterFunc(300*time.Millisecond, func() { close(g.gate) })
	for {
		m := c.read()
		if m.Event == phoenix.EventReply || m.Event == phoenix.EventSystem {
			if !g.live.Load() {
				t.Fatalf("%s sent before the subscription was live: %s", m.Event, m.Payload)
			}
		}
		if m.Event == phoenix.EventSystem {
			break
		}
	}
	e.publish(rec("posts", broker.ActionCreate, "after"))
	if m := c.read(); m.Event != phoenix.EventPostgresChanges || !strings.Contains(string(m.Payload), `"id":"after"`) {
		t.Fatalf("got %s %s, want the change committed after the system message", m.Event, m.Payload)
	}
}

func TestSupabaseRESTBroadcastRefused(t *testing.T) {
	e := newEnv(t, envOpts{})
	for _, path := range []string{SupabaseBroadcastPath, SupabaseBroadcastPath + "/room/events/cursor"} {
		st, body, _ := e.httpDo("POST", path, "", `{"messages":[]}`)
		if st != 501 || body["error"] != "rest_broadcast_not_supported" || !strings.Contains(fmt.Sprint(body["message"]), "channel.send") {
			t.Errorf("POST %s: %d %v", path, st, body)
		}
	}
}

// TestSupabaseFilter: a binding's filter is a column filter on its table
// (PROTOCOL section 2 syntax, one filter); bad ones are join errors.
func TestSupabaseFilter(t *testing.T) {
	yes := "true"
	e := newEnv(t, envOpts{rules: &rules.Config{Collections: map[string]rules.Collection{"posts": {Read: &yes}}}})
	c := e.dialPhoenix("vsn=2.0.0")
	binding := func(filter string) map[string]any {
		return map[string]any{"event": "*", "schema": "public", "table": "posts", "filter": filter}
	}
	for filter, want := range map[string]string{
		"user_id=eq.ann&x=eq.1": "one filter per binding",
		"user_id=like.a%":       "filter",
		"nonsense":              "filter",
	} {
		if st, resp := c.reply(c.push("realtime:bad", phoenix.EventJoin, join(binding(filter)))); st != "error" || !strings.Contains(fmt.Sprint(resp["reason"]), want) {
			t.Errorf("filter %q: %s %v, want an error containing %q", filter, st, resp, want)
		}
	}
	if st, resp := c.reply(c.push("realtime:f", phoenix.EventJoin, join(binding("user_id=eq.ann")))); st != "ok" {
		t.Fatalf("join: %v", resp)
	}
	e.publish(rec("posts", broker.ActionCreate, "1", "user_id", "bob"), rec("posts", broker.ActionCreate, "2", "user_id", "ann"))
	for {
		m := c.read()
		if m.Event == phoenix.EventPostgresChanges {
			if !strings.Contains(string(m.Payload), `"user_id":"ann"`) {
				t.Fatalf("first change %s, want ann's row only", m.Payload)
			}
			break
		}
	}
}

// TestSupabaseOneMessagePerChange: a change that several bindings of a
// channel match is one message listing their ids (binding order), and the
// changes of a transaction arrive in commit order whichever binding they
// match, as with Supabase.
func TestSupabaseOneMessagePerChange(t *testing.T) {
	yes := "true"
	e := newEnv(t, envOpts{rules: &rules.Config{Collections: map[string]rules.Collection{"posts": {Read: &yes}, "comments": {Read: &yes}}}})
	c := e.dialPhoenix("vsn=1.0.0")
	ref := c.push("realtime:multi", phoenix.EventJoin, join(
		map[string]any{"event": "*", "schema": "public", "table": "posts"},
		map[string]any{"event": "INSERT", "schema": "public", "table": "posts", "filter": "user_id=eq.ann"},
		map[string]any{"event": "*", "schema": "public", "table": "comments"},
	))
	m := c.read()
	var r struct {
		Response struct {
			PostgresChanges []bindingSpec `json:"postgres_changes"`
		} `json:"response"`
	}
	json.Unmarshal(m.Payload, &r)
	ids := r.Response.PostgresChanges
	if *m.Ref != ref || len(ids) != 3 {
		t.Fatalf("join reply %s", m.Payload)
	}
	e.publish(rec("posts", broker.ActionCreate, "1", "user_id", "ann"), rec("comments", broker.ActionCreate, "2"), rec("posts", broker.ActionUpdate, "1", "user_id", "bob"))
	want := [][]uint32{{ids[0].ID, ids[1].ID}, {ids[2].ID}, {ids[0].ID}}
	var got [][]uint32
	for len(got) < len(want) {
		m := c.read()
		if m.Event != phoenix.EventPostgresChanges {
			continue
		}
		var p struct {
			IDs []uint32 `json:"ids"`
		}
		json.Unmarshal(m.Payload, &p)
		got = append(got, p.IDs)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ids per message %v, want %v", got, want)
	}
}
