package wsapi

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/cdc"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
	"github.com/pgrealtime/pgrealtime/internal/pgtest"
	"github.com/pgrealtime/pgrealtime/wsapi/rules"
)

// pgEnv is the whole pipeline on a real Postgres: WAL → cdc.Reader →
// broker.Memory → Server → real WebSocket clients.
type pgEnv struct {
	*env
	db     *pgx.Conn
	reader *cdc.Reader
}

// newPGEnv creates a database, runs schema, then starts the reader on it.
func newPGEnv(t *testing.T, schema string, o envOpts) *pgEnv {
	t.Helper()
	url := pgtest.NewDB(t)
	var reader atomic.Pointer[cdc.Reader]
	cfg := o.cfg
	o.cfg = func(c *Config) {
		c.Ready = func() (bool, string) {
			if r := reader.Load(); r != nil {
				return r.Ready()
			}
			return false, "reader not started"
		}
		if cfg != nil {
			cfg(c)
		}
	}
	o.noBase = true
	e := newEnv(t, o)
	db, err := pgx.Connect(e.ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	if _, err := db.Exec(e.ctx, schema); err != nil {
		t.Fatalf("schema: %v", err)
	}
	r := startPGReader(e, url)
	reader.Store(r)
	e.waitFor("the reader to stream", func() bool {
		code, _, _ := e.httpDo("GET", "/readyz", "", "")
		return code == 200
	})
	// Readiness is the WAL stream; the NOTIFY listener connects on its own:
	// wait for it too, or a test's first pg_notify may go unheard.
	e.waitFor("the NOTIFY listener", func() bool {
		var n int
		err := db.QueryRow(e.ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE 'LISTEN %'`).Scan(&n)
		return err == nil && n > 0
	})
	return &pgEnv{env: e, db: db, reader: r}
}

// startPGReader runs a cdc.Reader from url into e's broker until the test
// ends.
func startPGReader(e *env, url string) *cdc.Reader {
	t := e.t
	t.Helper()
	r, err := cdc.NewReader(cdc.Config{
		ConnString:     url,
		Slot:           fmt.Sprintf("wsapi_%d", time.Now().UnixNano()),
		Publisher:      e.broker,
		Live:           e.broker,
		Checkpoint:     e.broker,
		Logger:         zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		StatusInterval: 100 * time.Millisecond,
		SyncInterval:   -1,
		MinBackoff:     50 * time.Millisecond,
		MaxBackoff:     500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("reader: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("reader did not stop")
		}
	})
	return r
}

func (p *pgEnv) exec(sql string, args ...any) {
	p.t.Helper()
	if _, err := p.db.Exec(p.ctx, sql, args...); err != nil {
		p.t.Fatalf("%s: %v", sql, err)
	}
}

// readN reads n event frames (failing on a reply or a timeout).
func (c *client) readN(n int) []msg {
	c.t.Helper()
	out := make([]msg, 0, n)
	for len(out) < n {
		m, err := c.readErr(20 * time.Second)
		if err != nil {
			c.t.Fatalf("after %d of %d events: %v", len(out), n, err)
		}
		if ty := m.str("type"); ty != "record_event" && ty != "custom_event" {
			c.t.Fatalf("got %v while waiting for events", m)
		}
		out = append(out, m)
	}
	return out
}

func recordOf(m msg, key string) map[string]any { r, _ := m[key].(map[string]any); return r }

// Every action of a published table reaches the socket through the real WAL
// reader, in commit order, with its record; a key change reaches
// subscribers of the old and of the new id once.
func TestPostgresRecordEvents(t *testing.T) {
	p := newPGEnv(t, `
		CREATE TABLE posts (id int PRIMARY KEY, title text, tags text[], meta jsonb);
		CREATE SCHEMA audit; CREATE TABLE audit.logins (id int PRIMARY KEY, who text);`, envOpts{})
	tok := adminToken(t)
	all := p.dial(tok)
	all.sub("posts", "audit:logins")
	one, two, both := p.dial(tok), p.dial(tok), p.dial(tok)
	one.sub("posts.1")
	two.sub("posts.2")
	both.sub("posts.1", "posts.2", "posts.*")

	p.exec(`INSERT INTO posts VALUES (1, 'one', '{a,b}', '{"k":1}')`)
	p.exec(`UPDATE posts SET title = 'uno' WHERE id = 1`)
	p.exec(`BEGIN; INSERT INTO audit.logins VALUES (7, 'ann'); UPDATE posts SET id = 2 WHERE id = 1; COMMIT`)
	p.exec(`DELETE FROM posts WHERE id = 2`)
	p.exec(`TRUNCATE posts`)

	evs := all.readN(6)
	want := []struct{ coll, action, id string }{
		{"posts", "create", "1"}, {"posts", "update", "1"}, {"audit:logins", "create", "7"},
		{"posts", "update", "2"}, {"posts", "delete", "2"}, {"posts", "truncate", ""},
	}
	var prev broker.Position
	for i, w := range want {
		ev := evs[i]
		if ev.str("type") != "record_event" || ev.str("collection") != w.coll || ev.str("action") != w.action || ev.str("record_id") != w.id {
			t.Errorf("event %d: %v, want %+v", i, ev, w)
		}
		pos, err := broker.ParsePosition(ev.str("position"))
		if err != nil || !prev.Less(pos) {
			t.Errorf("event %d: position %q after %s", i, ev.str("position"), prev)
		}
		prev = pos
	}
	if r := recordOf(evs[0], "record"); r["title"] != "one" || r["id"] != 1.0 || fmt.Sprint(r["tags"]) != "[a b]" || recordOf(r, "meta")["k"] != 1.0 {
		t.Errorf("create record %v", r)
	}
	if _, has := evs[1]["old_record"]; has {
		t.Errorf("update without key change has old_record: %v", evs[1])
	}
	if o := recordOf(evs[3], "old_record"); o["id"] != 1.0 {
		t.Errorf("key change old_record %v", evs[3]["old_record"])
	}
	if r := recordOf(evs[4], "record"); r["id"] != 2.0 {
		t.Errorf("delete record %v", evs[4]["record"])
	}
	if _, has := evs[5]["record"]; has {
		t.Errorf("truncate has a record: %v", evs[5])
	}
	// Record subscribers: posts.1 gets create, update and the key change;
	// posts.2 the key change and the delete; "both" every posts event once.
	check := func(name string, c *client, idx ...int) {
		got := c.readN(len(idx))
		for i, j := range idx {
			if got[i].str("position") != evs[j].str("position") {
				t.Errorf("%s: event %d at %s, want %s", name, i, got[i].str("position"), evs[j].str("position"))
			}
		}
		if extra := c.sync(); len(extra) != 0 {
			t.Errorf("%s: unexpected %v", name, extra)
		}
	}
	check("posts.1", one, 0, 1, 3)
	check("posts.2", two, 3, 4)
	check("both", both, 0, 1, 3, 4, 5)

	// Resume after reconnect: the events written while away, nothing else.
	last := evs[5].str("position")
	all.ws.CloseNow()
	p.exec(`INSERT INTO posts VALUES (10, 'ten')`)
	p.exec(`INSERT INTO audit.logins VALUES (8, 'bob')`)
	again := p.dial(tok)
	// Wait until the reader has published both, so that they are history.
	p.waitFor("the reader to publish", func() bool {
		pos, _ := broker.ParsePosition(last)
		return countAfter(p.broker, pos) >= 2
	})
	r, before := again.request(msg{"type": "subscribe", "topics": []string{"posts", "audit:logins"}, "since": last})
	if r.str("type") != "subscribed" || len(before) != 0 {
		t.Fatalf("resume: %v after %v", r, before)
	}
	got := again.readN(2)
	if got[0].str("collection") != "posts" || got[0].str("record_id") != "10" || got[1].str("collection") != "audit:logins" || got[1].str("record_id") != "8" {
		t.Fatalf("after resume got %v", got)
	}
	if extra := again.sync(); len(extra) != 0 {
		t.Fatalf("after resume also got %v", extra)
	}
}

// countAfter counts the events a fresh subscriber to "*" would replay after pos.
func countAfter(b *broker.Memory, pos broker.Position) int {
	n := 0
	probe := &countingSub{n: &n}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := b.Subscribe(ctx, probe, []broker.Pattern{{All: true}}, &pos); err != nil {
		return 0
	}
	b.Remove(probe)
	return n
}

type countingSub struct{ n *int }

func (s *countingSub) Deliver(*broker.Event)            {}
func (s *countingSub) DeliverBatch(evs []*broker.Event) { *s.n += len(evs) }
func (s *countingSub) Resync()                          {}

// Record ids of PROTOCOL section 2: composite keys joined with ",", ids
// with dots, key-less tables (collection patterns only), schema-qualified
// collections.
func TestPostgresRecordIDs(t *testing.T) {
	p := newPGEnv(t, `
		CREATE TABLE pairs (b text, a int, PRIMARY KEY (a, b));
		CREATE TABLE files (path text PRIMARY KEY);
		CREATE TABLE logs (line text);
		CREATE SCHEMA app; CREATE TABLE app.items (id int PRIMARY KEY);`, envOpts{})
	tok := adminToken(t)
	rec, coll := p.dial(tok), p.dial(tok)
	rec.sub("pairs.7,x", "files.a.b.txt", "app:items.3")
	coll.sub("logs", "app:items")
	p.exec(`INSERT INTO pairs VALUES ('x', 7), ('y', 7)`)
	p.exec(`INSERT INTO files VALUES ('a.b.txt'), ('a.b')`)
	p.exec(`INSERT INTO logs VALUES ('hello')`)
	p.exec(`INSERT INTO app.items VALUES (3), (4)`)
	got := rec.readN(3)
	for i, w := range []string{"pairs 7,x", "files a.b.txt", "app:items 3"} {
		if g := got[i].str("collection") + " " + got[i].str("record_id"); g != w {
			t.Errorf("record subscriber event %d: %s, want %s", i, g, w)
		}
	}
	got = coll.readN(3)
	if _, has := got[0]["record_id"]; has || got[0].str("collection") != "logs" {
		t.Errorf("key-less event %v", got[0])
	}
	if extra := append(rec.sync(), coll.sync()...); len(extra) != 0 {
		t.Errorf("unexpected %v", extra)
	}
}

// Custom events from NOTIFY, from pgrealtime.broadcast (through the WAL,
// positioned, ordered with the transaction) and from POST /api/broadcast all
// reach subscribers; malformed payloads never do.
func TestPostgresCustomEvents(t *testing.T) {
	p := newPGEnv(t, `CREATE TABLE msgs (id int PRIMARY KEY)`, envOpts{})
	tok := adminToken(t)
	room := p.dial(tok)
	room.sub("chat.room1")
	coll := p.dial(tok)
	coll.sub("chat", "msgs")

	p.exec(`SELECT pg_notify('pgrealtime', '{"collection":"chat","event":"typing","record_id":"room1","data":{"user":"ann"}}')`)
	got := room.readN(1)[0]
	if got.str("type") != "custom_event" || got.str("event") != "typing" || got.str("record_id") != "room1" || recordOf(got, "data")["user"] != "ann" {
		t.Fatalf("notify: %v", got)
	}
	if _, has := got["position"]; has {
		t.Fatalf("notify event has a position: %v", got)
	}
	badBefore := counterValue(t, metrics.BadPayloads.WithLabelValues("notify"))
	p.exec(`SELECT pg_notify('pgrealtime', 'not json')`)
	p.exec(`SELECT pg_notify('pgrealtime', '{"event":"no collection"}')`)
	p.waitFor("malformed notifications to be counted", func() bool {
		return counterValue(t, metrics.BadPayloads.WithLabelValues("notify"))-badBefore == 2
	})

	p.exec(`BEGIN; INSERT INTO msgs VALUES (1); SELECT pgrealtime.broadcast('chat', 'sent', '{"n":1}'::jsonb, 'room1'); INSERT INTO msgs VALUES (2); COMMIT`)
	p.exec(`BEGIN; SELECT pgrealtime.broadcast('chat', 'lost', NULL, 'room1'); ROLLBACK`)
	wal := room.readN(1)[0]
	if wal.str("event") != "sent" || wal.str("position") == "" || recordOf(wal, "data")["n"] != 1.0 {
		t.Fatalf("broadcast: %v", wal)
	}
	seq := coll.readN(4) // typing (notify), then msgs 1, sent, msgs 2 in transaction order
	if seq[0].str("event") != "typing" || seq[1].str("record_id") != "1" || seq[2].str("event") != "sent" || seq[3].str("record_id") != "2" {
		t.Fatalf("collection subscriber got %v", seq)
	}
	if seq[2].str("position") != wal.str("position") {
		t.Fatalf("positions differ: %s vs %s", seq[2].str("position"), wal.str("position"))
	}

	if code, _, raw := p.httpDo("POST", "/api/broadcast", tok, `{"collection":"chat","event":"http","record_id":"room1"}`); code != 202 {
		t.Fatalf("POST: %d %s", code, raw)
	}
	if h := room.readN(1)[0]; h.str("event") != "http" {
		t.Fatalf("http: %v", h)
	}
	// Nothing else (the malformed notifications and the rolled-back broadcast).
	if extra := append(room.sync(), coll.sync()...); len(extra) != 1 || extra[0].str("event") != "http" {
		t.Fatalf("unexpected %v", extra)
	}
}

// The users × collections × actions matrix of issue 4: each client receives
// exactly the events its rules allow; omitted columns are absent everywhere;
// events: false is never delivered, not even to the admin's "*".
func TestPostgresRulesMatrix(t *testing.T) {
	str := func(s string) *string { return &s }
	no := false
	rc := &rules.Config{
		Collections: map[string]rules.Collection{
			"posts":        {Read: str("true"), OmitColumns: []string{"internal_notes"}},
			"messages":     {Read: str("auth.sub == record.user_id")},
			"chat":         {Read: str("auth.sub != ''")},
			"staff":        {Read: str("auth.role == 'staff'")},
			"audit:logins": {Events: &no},
		},
		Default: &rules.Collection{Read: str("auth.role == 'admin'")},
	}
	p := newPGEnv(t, `
		CREATE TABLE posts (id int PRIMARY KEY, title text, internal_notes text);
		ALTER TABLE posts REPLICA IDENTITY FULL;
		CREATE TABLE messages (id int PRIMARY KEY, user_id text, body text);
		ALTER TABLE messages REPLICA IDENTITY FULL;
		CREATE TABLE chat (id int PRIMARY KEY, line text);
		CREATE TABLE staff (id int PRIMARY KEY, note text);
		CREATE TABLE other (id int PRIMARY KEY);
		CREATE SCHEMA audit; CREATE TABLE audit.logins (id int PRIMARY KEY, who text);`, envOpts{rules: rc})

	collections := []string{"posts", "messages", "chat", "staff", "audit:logins", "other"}
	type user struct {
		name   string
		tok    string
		allow  []string // collections it may subscribe to
		events int      // events it must receive
	}
	users := []*user{
		{"anonymous", "", []string{"posts"}, 4},
		{"alice", token(t, "alice", "user", time.Hour), []string{"posts", "messages", "chat"}, 4 + 3 + 2},
		{"bob", token(t, "bob", "user", time.Hour), []string{"posts", "messages", "chat"}, 4 + 2 + 2},
		{"sam", token(t, "sam", "staff", time.Hour), []string{"posts", "messages", "chat", "staff"}, 4 + 0 + 2 + 1},
		{"admin", adminToken(t), []string{"posts", "messages", "chat", "staff", "other"}, 4 + 5 + 2 + 1 + 1},
	}
	clients := map[string]*client{}
	for _, u := range users {
		c := p.dial(u.tok)
		clients[u.name] = c
		for _, coll := range collections {
			r, _ := c.request(msg{"type": "subscribe", "topics": []string{coll + ".*"}})
			allowed := slices.Contains(u.allow, coll)
			if (r.str("type") == "subscribed") != allowed || (!allowed && r.str("code") != "forbidden") {
				t.Errorf("%s subscribe %s: %v (want allowed=%v)", u.name, coll, r, allowed)
			}
		}
		r, _ := c.request(msg{"type": "subscribe", "topics": []string{"*"}})
		if (r.str("type") == "subscribed") != (u.name == "admin") {
			t.Errorf("%s subscribe *: %v", u.name, r)
		}
		c.request(msg{"type": "unsubscribe", "topics": []string{"*"}})
	}
	star := p.dial(adminToken(t))
	star.sub("*")

	p.exec(`INSERT INTO posts VALUES (1, 'a', 'secret-1'), (2, 'b', 'secret-2')`) // 2 events
	p.exec(`UPDATE posts SET title = 'a2', internal_notes = 'secret-3' WHERE id = 1`)
	p.exec(`DELETE FROM posts WHERE id = 2`)
	p.exec(`INSERT INTO messages VALUES (1, 'alice', 'hi'), (2, 'alice', 'yo'), (3, 'bob', 'hey')`)
	p.exec(`UPDATE messages SET body = 'hi!' WHERE id = 1`)
	p.exec(`DELETE FROM messages WHERE id = 3`)
	p.exec(`INSERT INTO chat VALUES (1, 'hello')`)
	p.exec(`SELECT pgrealtime.broadcast('chat', 'typing', '{"user":"ann"}'::jsonb)`)
	p.exec(`INSERT INTO staff VALUES (1, 'staff only')`)
	p.exec(`INSERT INTO audit.logins VALUES (1, 'ann'), (2, 'bob')`)
	p.exec(`UPDATE audit.logins SET who = 'x'`)
	p.exec(`INSERT INTO other VALUES (1)`)
	const total = 4 + 5 + 2 + 1 + 1

	starGot := star.readN(total)
	for _, u := range users {
		c := clients[u.name]
		got := c.sync() // every event was queued before star received the last one
		if len(got) != u.events {
			var s []string
			for _, m := range got {
				s = append(s, m.str("collection")+"/"+m.str("action")+m.str("event")+"/"+m.str("record_id"))
			}
			t.Errorf("%s got %d events, want %d: %v", u.name, len(got), u.events, s)
		}
		for _, m := range got {
			checkVisible(t, u.name, m)
			if m.str("collection") == "messages" && u.name != "admin" {
				if who := recordOf(m, "record")["user_id"]; who != u.name {
					t.Errorf("%s got a message of %v", u.name, who)
				}
			}
		}
	}
	for _, m := range starGot {
		checkVisible(t, "admin *", m)
	}
	if extra := star.sync(); len(extra) != 0 {
		t.Errorf("admin * got more than %d events: %v", total, extra)
	}
}

// checkVisible fails on omitted columns and events: false collections.
func checkVisible(t *testing.T, who string, m msg) {
	t.Helper()
	if m.str("collection") == "audit:logins" {
		t.Errorf("%s received an events:false event: %v", who, m)
	}
	b, _ := json.Marshal(m)
	if strings.Contains(string(b), "internal_notes") || strings.Contains(string(b), "secret-") {
		t.Errorf("%s received an omitted column: %s", who, b)
	}
}

// A transaction far larger than the send queue reaches a client that reads
// at normal speed: it takes one slot of the queue, not one per row.
func TestPostgresLargeTransactionFitsDefaultQueue(t *testing.T) {
	p := newPGEnv(t, `CREATE TABLE posts (id int PRIMARY KEY, title text);
		CREATE TABLE other (id int PRIMARY KEY)`, envOpts{history: 20000})
	if p.srv.cfg.SendQueue != DefaultSendQueue {
		t.Fatalf("send queue %d, want the default %d", p.srv.cfg.SendQueue, DefaultSendQueue)
	}
	tok := adminToken(t)
	c := p.dial(tok)
	c.sub("posts")
	const rows = 5 * DefaultSendQueue
	p.exec(`INSERT INTO posts SELECT g, 'row ' || g FROM generate_series(1, $1) g`, rows)
	p.exec(`INSERT INTO other VALUES (1)`)
	p.exec(`INSERT INTO posts VALUES (0, 'after')`)
	evs := c.readN(rows + 1)
	for i, ev := range evs[:rows] {
		if ev.str("record_id") != fmt.Sprint(i+1) {
			t.Fatalf("event %d has record_id %q", i, ev.str("record_id"))
		}
	}
	if evs[rows].str("record_id") != "0" {
		t.Fatalf("last event %v", evs[rows])
	}
}
