package wsapi

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

// untilBarrier reads events up to the first one of collection "barrier"
// (inserted by the test after the statements under test: events arrive in
// commit order) and returns those before it as "action/record_id" (or
// "event/record_id" for custom events).
func (c *client) untilBarrier() []string {
	c.t.Helper()
	var out []string
	for {
		m, err := c.readErr(20 * time.Second)
		if err != nil {
			c.t.Fatalf("waiting for the barrier after %v: %v", out, err)
		}
		switch m.str("type") {
		case "record_event":
			if m.str("collection") == "barrier" {
				return out
			}
			out = append(out, m.str("action")+"/"+m.str("record_id"))
		case "custom_event":
			out = append(out, m.str("event")+"/"+m.str("record_id"))
		default:
			c.t.Fatalf("got %v while waiting for events", m)
		}
	}
}

const filterSchema = `
	CREATE TABLE barrier (id serial PRIMARY KEY);
	CREATE TABLE orders (id int PRIMARY KEY, user_id text, status text, total numeric, qty int, code text, note text);`

// Column filters on /realtime against the real WAL: insert, update and
// delete matching and not matching, in-lists with quoted values, numbers
// compared as numbers and text as text, one delivery per connection.
func TestPostgresFilters(t *testing.T) {
	p := newPGEnv(t, filterSchema, envOpts{})
	tok := adminToken(t)
	subs := map[string][]string{
		"ann":     {"orders?user_id=eq.ann"},
		"paid":    {`orders.*?status=in.(paid,"shipped, late")&total=gt.100`},
		"code":    {"orders?code=eq.007"}, // text: "007" is not "7"
		"qty":     {"orders?qty=eq.07"},   // number: 07 is 7
		"del":     {"orders?id=eq.2"},     // the key is logged on delete
		"delNote": {"orders?note=eq.x"},   // note is not: a delete never matches
		"both":    {"orders?user_id=eq.ann", "orders?qty=gte.5"},
		"none":    {"orders?user_id=eq.nobody"},
	}
	clients := map[string]*client{}
	for name, topics := range subs {
		c := p.dial(tok)
		c.sub(append(topics, "barrier")...)
		clients[name] = c
	}
	p.exec(`INSERT INTO orders VALUES (1, 'ann', 'paid', 150.5, 7, '007', 'x')`)
	p.exec(`INSERT INTO orders VALUES (2, 'bob', 'shipped, late', 100.01, 3, '7', 'x')`)
	p.exec(`UPDATE orders SET user_id = 'bob', total = 99 WHERE id = 1`)
	p.exec(`UPDATE orders SET user_id = 'ann' WHERE id = 2`)
	p.exec(`DELETE FROM orders WHERE id = 2`)
	p.exec(`DELETE FROM orders WHERE id = 1`)
	p.exec(`INSERT INTO barrier DEFAULT VALUES`)
	want := map[string]string{
		"ann":     "create/1 update/2",
		"paid":    "create/1 create/2 update/2",
		"code":    "create/1 update/1",
		"qty":     "create/1 update/1",
		"del":     "create/2 update/2 delete/2",
		"delNote": "create/1 create/2 update/1 update/2",
		"both":    "create/1 update/1 update/2",
		"none":    "",
	}
	for name, c := range clients {
		if got := strings.Join(c.untilBarrier(), " "); got != want[name] {
			t.Errorf("%s (%v) got %q, want %q", name, subs[name], got, want[name])
		}
	}

	// The whole string is the subscription's name: a=eq.1 and a=eq.2 are
	// two; "orders" and "orders.*" name the same one.
	c := clients["ann"]
	r := c.sub("orders.*?user_id=eq.bob", "orders?user_id=eq.ann")
	if got := r.strs("topics"); fmt.Sprint(got) != "[orders.*?user_id=eq.bob orders?user_id=eq.ann]" {
		t.Fatalf("subscribed echoes %v", got)
	}
	if r, _ := c.request(msg{"type": "unsubscribe", "topics": []string{"orders.*?user_id=eq.ann"}}); r.str("type") != "unsubscribed" {
		t.Fatalf("unsubscribe: %v", r)
	}
	p.exec(`INSERT INTO orders (id, user_id) VALUES (3, 'ann'), (4, 'bob')`)
	p.exec(`INSERT INTO barrier DEFAULT VALUES`)
	if got := strings.Join(c.untilBarrier(), " "); got != "create/4" {
		t.Errorf("after unsubscribing the ann filter: got %q, want create/4 (the bob filter only)", got)
	}
}

// Custom events (pgrealtime.broadcast through the WAL, and NOTIFY) match
// filters on their data object.
func TestPostgresFiltersOnCustomEvents(t *testing.T) {
	p := newPGEnv(t, filterSchema, envOpts{})
	tok := adminToken(t)
	ann := p.dial(tok)
	ann.sub(`chat?user=eq.ann&n=gte.2`, "barrier")
	room := p.dial(tok)
	room.sub(`chat.room1?user=in.("ann","o'hara")`, "barrier")

	p.exec(`SELECT pgrealtime.broadcast('chat', 'typing', '{"user":"ann","n":2}'::jsonb, 'room1')`)
	p.exec(`SELECT pgrealtime.broadcast('chat', 'typing', '{"user":"ann","n":1.5}'::jsonb, 'room2')`)
	p.exec(`SELECT pgrealtime.broadcast('chat', 'sent', '{"user":"bob","n":9}'::jsonb, 'room1')`)
	p.exec(`SELECT pgrealtime.broadcast('chat', 'sent', '{"user":"o''hara","n":9}'::jsonb, 'room1')`)
	p.exec(`SELECT pgrealtime.broadcast('chat', 'bare', NULL, 'room1')`)
	p.exec(`SELECT pgrealtime.broadcast('chat', 'sent', '{"user":"ann","n":10}'::jsonb)`)
	p.exec(`INSERT INTO barrier DEFAULT VALUES`)
	if got := strings.Join(ann.untilBarrier(), " "); got != "typing/room1 sent/" {
		t.Errorf("data filter got %q", got)
	}
	if got := strings.Join(room.untilBarrier(), " "); got != "typing/room1 sent/room1" {
		t.Errorf("record pattern with an in filter got %q", got)
	}

	// Live events (NOTIFY) are filtered too: bob's comes first, so if it
	// got through it would be read before ann's.
	p.exec(`SELECT pg_notify('pgrealtime', '{"collection":"chat","event":"live","record_id":"room1","data":{"user":"bob","n":3}}')`)
	p.exec(`SELECT pg_notify('pgrealtime', '{"collection":"chat","event":"live","record_id":"room1","data":{"user":"ann","n":3}}')`)
	for _, c := range []*client{ann, room} {
		if m := c.readN(1)[0]; m.str("event") != "live" || recordOf(m, "data")["user"] != "ann" {
			t.Fatalf("notify: got %v, want ann's live event", m)
		}
	}
}

// A subscribe with since replays only the retained events its filters
// match, then goes live with the filter.
func TestPostgresFiltersResume(t *testing.T) {
	p := newPGEnv(t, filterSchema, envOpts{})
	tok := adminToken(t)
	first := p.dial(tok)
	since := first.sub("orders").str("position")
	p.exec(`INSERT INTO orders (id, user_id, total) VALUES (1, 'ann', 5), (2, 'bob', 50)`)
	p.exec(`UPDATE orders SET total = 500 WHERE id = 2`)
	p.exec(`UPDATE orders SET user_id = 'ann' WHERE id = 2`)
	first.readN(4)

	c := p.dial(tok)
	r, replay := c.request(msg{"type": "subscribe", "topics": []string{"orders?user_id=eq.ann&total=gte.5", "barrier"}, "since": since})
	if r.str("type") != "subscribed" {
		t.Fatalf("subscribe with since: %v", r)
	}
	p.exec(`INSERT INTO orders (id, user_id, total) VALUES (3, 'ann', 4), (4, 'ann', 6)`)
	p.exec(`INSERT INTO barrier DEFAULT VALUES`)
	got := append(positionsOf(replay), c.untilBarrier()...)
	if strings.Join(got, " ") != "create/1 update/2 create/4" {
		t.Fatalf("replay + live = %v, want create/1 update/2 create/4", got)
	}
}

func positionsOf(ms []msg) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.str("action")+"/"+m.str("record_id"))
	}
	return out
}

// Bad filters are invalid_topic errors that say what is wrong, and the
// whole subscribe is refused.
func TestFilterInvalidTopic(t *testing.T) {
	e := newEnv(t, envOpts{})
	c := e.dial(adminToken(t))
	for topic, want := range map[string]string{
		"orders?user_id=like.ann":    `unknown operator "like"`,
		"orders?":                    `nothing after "?"`,
		"orders?user_id":             `no "="`,
		"orders?status=in.(a,b":      `no closing ")"`,
		"orders?status=is.maybe":     `"is" takes null, true or false`,
		"*?user_id=eq.ann":           `"*" takes no filters`,
		"orders?a=eq.1&b=eq.2&c=x.3": `filter 3`,
		"orders?" + strings.Repeat("a=eq.1&", 8) + "a=eq.1": "at most 8 filters",
	} {
		r := c.expectError(msg{"type": "subscribe", "topics": []string{"orders?user_id=eq.ok", topic}}, CodeInvalidTopic)
		if r.str("topic") != topic || !strings.Contains(r.str("message"), want) {
			t.Errorf("%s: got %v, want a message containing %q", topic, r, want)
		}
	}
	if r, _ := c.request(msg{"type": "unsubscribe", "topics": []string{"orders?user_id=eq.ok"}}); r.str("type") != "unsubscribed" {
		t.Fatalf("unsubscribe: %v", r)
	}
	// Nothing was subscribed by the refused requests: the valid topic is new.
	if r := c.sub("orders?user_id=eq.ok"); r.str("type") != "subscribed" {
		t.Fatal(r)
	}
}

// Read rules still apply on top of filters, and a filter on an omitted
// column never matches (omit_columns cannot be probed through filters).
func TestPostgresFiltersWithRules(t *testing.T) {
	str := func(s string) *string { return &s }
	rc := &rules.Config{Collections: map[string]rules.Collection{
		"orders":  {Read: str("auth.sub == record.user_id"), OmitColumns: []string{"note"}},
		"barrier": {Read: str("true")},
	}}
	p := newPGEnv(t, filterSchema, envOpts{rules: rc})
	ann := p.dial(token(t, "ann", "user", time.Hour))
	ann.sub("orders?status=eq.open", "barrier")
	probe := p.dial(token(t, "bob", "user", time.Hour))
	probe.sub("orders?note=eq.secret", "orders?note=is.null", "barrier")

	p.exec(`INSERT INTO orders (id, user_id, status, note) VALUES (1, 'ann', 'open', 'secret'), (2, 'bob', 'open', 'secret'), (3, 'ann', 'closed', NULL), (4, 'bob', 'open', NULL)`)
	p.exec(`INSERT INTO barrier DEFAULT VALUES`)
	if got := strings.Join(ann.untilBarrier(), " "); got != "create/1" {
		t.Errorf("ann (own rows, status open) got %q, want create/1", got)
	}
	if got := strings.Join(probe.untilBarrier(), " "); got != "" {
		t.Errorf("filters on an omitted column got %q, want nothing", got)
	}
}

// Many connections with their own eq filter receive exactly their events
// while other connections subscribe and unsubscribe filtered patterns
// concurrently (the filter index changes under publishing; run with -race).
func TestFiltersConcurrent(t *testing.T) {
	e := newEnv(t, envOpts{cfg: func(c *Config) { c.SubscribeRate = 1e6 }})
	tok := adminToken(t)
	const owners, churners, events = 20, 6, 300
	clients := make([]*client, owners)
	for i := range clients {
		clients[i] = e.dial(tok)
		clients[i].sub(fmt.Sprintf("posts?user_id=eq.u%d", i), "barrier")
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for k := 0; k < churners; k++ {
		c := e.dial(tok)
		wg.Add(1)
		go func() {
			defer wg.Done()
			topic := fmt.Sprintf("posts?user_id=eq.u%d&n=gte.0", k)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				typ := "subscribe"
				if i%2 == 1 {
					typ = "unsubscribe"
				}
				c.send(msg{"type": typ, "id": "c", "topics": []string{topic}})
				for { // events until the reply
					m, err := c.readErr(10 * time.Second)
					if err != nil {
						t.Errorf("churner %d: %v", k, err)
						return
					}
					if m.str("type") == "record_event" {
						if u := recordOf(m, "record")["user_id"]; u != fmt.Sprintf("u%d", k) {
							t.Errorf("churner %d (%s) got an event of %v", k, topic, u)
						}
						continue
					}
					if m.str("type") != typ+"d" {
						t.Errorf("churner %d: got %v", k, m)
						return
					}
					break
				}
			}
		}()
	}
	for i := 0; i < events; i++ {
		e.publish(rec("posts", broker.ActionCreate, fmt.Sprint(i), "user_id", fmt.Sprintf("u%d", i%owners), "n", int64(i)))
	}
	close(stop)
	wg.Wait()
	e.publish(rec("barrier", broker.ActionCreate, "1"))
	for i, c := range clients {
		got := c.untilBarrier()
		if len(got) != events/owners {
			t.Errorf("owner %d got %d events, want %d", i, len(got), events/owners)
		}
		for j, g := range got {
			if want := fmt.Sprintf("create/%d", i+j*owners); g != want {
				t.Errorf("owner %d event %d is %s, want %s", i, j, g, want)
				break
			}
		}
	}
}
