package cdc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/metrics"
	"github.com/pgrealtime/pgrealtime/internal/pgcluster"
	"github.com/pgrealtime/pgrealtime/internal/pgtest"
)

// sink is what the tests hand a Reader: Publisher, Live and Checkpoint.
type sink interface {
	broker.Publisher
	broker.LivePublisher
	broker.Checkpoint
}

// recSink is a real synchronous Publisher (and Checkpoint without a
// window) that records what it is given.
type recSink struct {
	mu      sync.Mutex
	calls   []string // "base", "begin", "tx", "live" in call order
	txs     []*broker.Tx
	live    []*broker.Event
	bases   []broker.Position
	begins  []broker.Position
	fail    func(tx *broker.Tx) error
	changed chan struct{}
}

func newRecSink() *recSink { return &recSink{changed: make(chan struct{}, 1)} }

func (s *recSink) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *recSink) Begin(_ context.Context, from broker.Position) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "begin")
	s.begins = append(s.begins, from)
	s.signal()
	return nil
}

// Durable: everything appended is accepted at once.
func (s *recSink) Durable(safe uint64) (uint64, error) { return safe, nil }

func (s *recSink) Append(_ context.Context, tx *broker.Tx) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		if err := s.fail(tx); err != nil {
			return err
		}
	}
	s.calls = append(s.calls, "tx")
	s.txs = append(s.txs, tx)
	s.signal()
	return nil
}

func (s *recSink) PublishLive(_ context.Context, ev *broker.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "live")
	s.live = append(s.live, ev)
	s.signal()
	return nil
}

func (s *recSink) MarkDelivered(pos broker.Position) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "delivered")
}

// Retained: the recording sink keeps no resume window.
func (s *recSink) Retained() (base, first broker.Position) { return }

func (s *recSink) SetBase(pos broker.Position) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "base")
	s.bases = append(s.bases, pos)
}

// events returns all record and WAL custom events published so far.
func (s *recSink) events() []*broker.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*broker.Event
	for _, tx := range s.txs {
		out = append(out, tx.Events...)
	}
	return out
}

func (s *recSink) transactions() []*broker.Tx {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*broker.Tx(nil), s.txs...)
}

func (s *recSink) liveEvents() []*broker.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*broker.Event(nil), s.live...)
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func waitEvents(t *testing.T, ctx context.Context, s *recSink, n int) []*broker.Event {
	t.Helper()
	var evs []*broker.Event
	waitFor(t, ctx, fmt.Sprintf("%d events", n), func() bool {
		evs = s.events()
		return len(evs) >= n
	})
	return evs
}

func randomName(prefix string) string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

type runningReader struct {
	r    *Reader
	done chan error
	stop context.CancelFunc
	cfg  Config
}

// startReader runs a Reader on url until the test ends (or stop is called).
func startReader(t *testing.T, url string, sink sink, mod func(*Config)) *runningReader {
	t.Helper()
	cfg := Config{
		ConnString:     url,
		Slot:           randomName("slot_"),
		Publisher:      sink,
		Live:           sink,
		Checkpoint:     sink,
		Logger:         zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel),
		StatusInterval: 100 * time.Millisecond,
		SyncInterval:   -1,
		MinBackoff:     50 * time.Millisecond,
		MaxBackoff:     500 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := NewReader(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rr := &runningReader{r: r, done: make(chan error, 1), stop: cancel, cfg: cfg}
	go func() { rr.done <- r.Run(ctx) }()
	t.Cleanup(func() { rr.shutdown(t) })
	return rr
}

// shutdown cancels Run and checks that it returns nil promptly.
func (rr *runningReader) shutdown(t *testing.T) {
	t.Helper()
	rr.stop()
	select {
	case err, ok := <-rr.done:
		if ok && err != nil {
			t.Errorf("Run returned %v", err)
		}
		if ok {
			close(rr.done)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("Run did not return within 15s of cancellation")
	}
}

// waitReady waits until the reader streams.
func (rr *runningReader) waitReady(t *testing.T, ctx context.Context) {
	t.Helper()
	waitFor(t, ctx, "reader ready", func() bool { ok, _ := rr.r.Ready(); return ok })
}

func connect(t *testing.T, ctx context.Context, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func mustExec(t *testing.T, ctx context.Context, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

func encode(t *testing.T, ev *broker.Event) string {
	t.Helper()
	b, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func recordJSON(t *testing.T, r broker.Row) string {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func checkOrdered(t *testing.T, evs []*broker.Event) {
	t.Helper()
	for i := 1; i < len(evs); i++ {
		if !evs[i-1].Position.Less(evs[i].Position) {
			t.Fatalf("event %d position %s not after %s", i, evs[i].Position, evs[i-1].Position)
		}
	}
}

func TestReaderActions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE SCHEMA audit; CREATE TABLE posts (id int PRIMARY KEY, title text);
		CREATE TABLE audit.logins (a int, b text, PRIMARY KEY (b, a))`)
	sink := newRecSink()
	rr := startReader(t, url, sink, nil)
	rr.waitReady(t, ctx)

	mustExec(t, ctx, conn, `INSERT INTO posts VALUES (1, 'one')`)
	mustExec(t, ctx, conn, `UPDATE posts SET title = 'uno' WHERE id = 1`)
	mustExec(t, ctx, conn, `DELETE FROM posts WHERE id = 1`)
	mustExec(t, ctx, conn, `INSERT INTO audit.logins VALUES (7, 'x')`)
	mustExec(t, ctx, conn, `TRUNCATE posts`)

	evs := waitEvents(t, ctx, sink, 5)
	want := []struct{ coll, action, id, record string }{
		{"posts", "create", "1", `{"id":1,"title":"one"}`},
		{"posts", "update", "1", `{"id":1,"title":"uno"}`},
		{"posts", "delete", "1", `{"id":1}`},
		{"audit:logins", "create", "x,7", `{"a":7,"b":"x"}`},
		{"posts", "truncate", "", `null`},
	}
	for i, w := range want {
		ev := evs[i]
		if ev.Kind != broker.KindRecord || ev.Collection != w.coll || ev.Action != w.action || ev.RecordID != w.id || recordJSON(t, ev.Record) != w.record {
			t.Errorf("event %d = %s, want %+v", i, encode(t, ev), w)
		}
		if ev.OldRecord != nil {
			t.Errorf("event %d: unexpected old_record", i)
		}
		if ev.Position.Index != 1 || ev.Timestamp.Location() != time.UTC || ev.Timestamp.IsZero() {
			t.Errorf("event %d: position %s timestamp %v", i, ev.Position, ev.Timestamp)
		}
	}
	checkOrdered(t, evs)
	for _, tx := range sink.transactions() {
		if tx.EndLSN <= tx.CommitLSN || tx.Events[0].Position.LSN != tx.CommitLSN || !tx.CommitTime.Equal(tx.Events[0].Timestamp) {
			t.Errorf("tx commit %X end %X events at %s", tx.CommitLSN, tx.EndLSN, tx.Events[0].Position)
		}
	}
}

func TestReaderValueTypes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TYPE mood AS ENUM ('sad', 'happy');
		CREATE DOMAIN posint AS int4 CHECK (VALUE > 0);
		CREATE TABLE vals (
			id int PRIMARY KEY,
			i2 int2, i4 int4, i8 int8,
			f4 float4, f8 float8, f8nan float8, f8inf float8, f8ninf float8,
			num numeric, numnan numeric,
			b bool, t text, vc varchar(10), ch char(3), u uuid,
			j json, jb jsonb,
			ia int[], ta text[], na numeric[], ba bool[],
			tstz timestamptz, ts timestamp, d date, tm time, iv interval,
			by bytea, m mood, ma mood[], ip inet, ci cidr, mac macaddr,
			dom posint, money money, pt point, n text, tr tsrange, bits bit(4)
		)`)
	sink := newRecSink()
	rr := startReader(t, url, sink, nil)
	rr.waitReady(t, ctx)
	mustExec(t, ctx, conn, `SET TimeZone = 'Europe/Paris'`)
	mustExec(t, ctx, conn, `INSERT INTO vals VALUES (
		1,
		-32768, 2147483647, 9223372036854775807,
		1.5, 0.1, 'NaN', 'Infinity', '-Infinity',
		123456789012345678901234567890.123456789012345678901, 'NaN',
		true, e'h\u00e9\"llo\n', 'vc', 'ab', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
		'{"a": [1, 2.50, "x"]}', '{"b": {"c": null}, "a": 1}',
		'{1,2,NULL}', '{"a b","c,d","e\"f",NULL,"NULL"}', '{1.50,NaN}', '{t,f}',
		'2026-01-02 04:04:05.678901+01', '2026-01-02 03:04:05.5', '2026-01-02', '03:04:05', '1 day 02:03:04',
		'\x00ff10', 'happy', '{sad,happy}', '192.168.0.1/24', '10.0.0.0/8', '08:00:2b:01:02:03',
		5, 12.34, '(1,2)', NULL, '[2026-01-01,2026-02-01)', B'1010'
	)`)
	evs := waitEvents(t, ctx, sink, 1)
	want := `{"id":1,"i2":-32768,"i4":2147483647,"i8":9223372036854775807,` +
		`"f4":1.5,"f8":0.1,"f8nan":"NaN","f8inf":"Infinity","f8ninf":"-Infinity",` +
		`"num":123456789012345678901234567890.123456789012345678901,"numnan":"NaN",` +
		`"b":true,"t":"hé\"llo\n","vc":"vc","ch":"ab ","u":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",` +
		`"j":{"a":[1,2.50,"x"]},"jb":{"a":1,"b":{"c":null}},` +
		`"ia":[1,2,null],"ta":["a b","c,d","e\"f",null,"NULL"],"na":[1.50,"NaN"],"ba":[true,false],` +
		`"tstz":"2026-01-02T03:04:05.678901Z","ts":"2026-01-02 03:04:05.5","d":"2026-01-02","tm":"03:04:05","iv":"1 day 02:03:04",` +
		`"by":"AP8Q","m":"happy","ma":["sad","happy"],"ip":"192.168.0.1/24","ci":"10.0.0.0/8","mac":"08:00:2b:01:02:03",` +
		`"dom":5,"money":"$12.34","pt":"(1,2)","n":null,"tr":"[\"2026-01-01 00:00:00\",\"2026-02-01 00:00:00\")","bits":"1010"}`
	if got := recordJSON(t, evs[0].Record); got != want {
		t.Errorf("record\n got %s\nwant %s", got, want)
	}
	if n := len(evs[0].Record); n < 25 {
		t.Errorf("only %d columns", n)
	}
	// Every column's type name, as pg_type.typname (the Supabase endpoint's
	// "columns"): from pgx for the types it knows, else from the catalog.
	var names []string
	for _, c := range evs[0].ColumnTypes {
		n := c.Name + ":" + c.Type
		if c.Key {
			n += ":key"
		}
		names = append(names, n)
	}
	wantTypes := "id:int4:key i2:int2 i4:int4 i8:int8 f4:float4 f8:float8 f8nan:float8 f8inf:float8 f8ninf:float8 " +
		"num:numeric numnan:numeric b:bool t:text vc:varchar ch:bpchar u:uuid j:json jb:jsonb " +
		"ia:_int4 ta:_text na:_numeric ba:_bool tstz:timestamptz ts:timestamp d:date tm:time iv:interval " +
		"by:bytea m:mood ma:_mood ip:inet ci:cidr mac:macaddr dom:posint money:money pt:point n:text tr:tsrange bits:bit"
	if got := strings.Join(names, " "); got != wantTypes {
		t.Errorf("column types\n got %s\nwant %s", got, wantTypes)
	}
}

func TestReaderUpdates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE docs (id int PRIMARY KEY, title text, body text);
		ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;
		CREATE TABLE full_items (id int PRIMARY KEY, name text, qty int);
		ALTER TABLE full_items REPLICA IDENTITY FULL;
		CREATE TABLE pair (a int, b int, v text, PRIMARY KEY (a, b))`)
	sink := newRecSink()
	rr := startReader(t, url, sink, nil)
	rr.waitReady(t, ctx)

	mustExec(t, ctx, conn, `INSERT INTO docs VALUES (1, 't', repeat('x', 5000))`)
	mustExec(t, ctx, conn, `UPDATE docs SET title = 'changed' WHERE id = 1`) // unchanged TOAST
	mustExec(t, ctx, conn, `UPDATE docs SET id = 2 WHERE id = 1`)            // key change
	mustExec(t, ctx, conn, `INSERT INTO full_items VALUES (1, 'a', 1)`)      //
	mustExec(t, ctx, conn, `UPDATE full_items SET qty = 2 WHERE id = 1`)     // FULL: old values
	mustExec(t, ctx, conn, `UPDATE full_items SET id = 3 WHERE id = 1`)      // FULL + key change
	mustExec(t, ctx, conn, `DELETE FROM full_items WHERE id = 3`)            // FULL delete: whole row
	mustExec(t, ctx, conn, `INSERT INTO pair VALUES (1, 2, 'v')`)            //
	mustExec(t, ctx, conn, `UPDATE pair SET b = 3 WHERE a = 1`)              // composite key change
	evs := waitEvents(t, ctx, sink, 9)

	type want struct{ action, id, oldID, record, old string }
	wants := []want{
		{"create", "1", "", "", ""},
		{"update", "1", "", `{"id":1,"title":"changed"}`, "null"},
		{"update", "2", "1", "", `{"id":1}`},
		{"create", "1", "", `{"id":1,"name":"a","qty":1}`, "null"},
		{"update", "1", "", `{"id":1,"name":"a","qty":2}`, `{"id":1,"name":"a","qty":1}`},
		{"update", "3", "1", `{"id":3,"name":"a","qty":2}`, `{"id":1,"name":"a","qty":2}`},
		{"delete", "3", "", `{"id":3,"name":"a","qty":2}`, "null"},
		{"create", "1,2", "", `{"a":1,"b":2,"v":"v"}`, "null"},
		{"update", "1,3", "1,2", `{"a":1,"b":3,"v":"v"}`, `{"a":1,"b":2}`},
	}
	for i, w := range wants {
		ev := evs[i]
		ok := ev.Action == w.action && ev.RecordID == w.id && ev.OldRecordID == w.oldID
		if w.record != "" && recordJSON(t, ev.Record) != w.record {
			ok = false
		}
		if w.old != "" && recordJSON(t, ev.OldRecord) != w.old {
			ok = false
		}
		if !ok {
			t.Errorf("event %d = %s (old id %q), want %+v", i, encode(t, ev), ev.OldRecordID, w)
		}
	}
	if got := evs[1].UnchangedColumns; len(got) != 1 || got[0] != "body" {
		t.Errorf("unchanged columns = %v, want [body]", got)
	}
	if _, ok := evs[1].Record.Get("body"); ok {
		t.Errorf("unchanged TOAST column present in record: %s", encode(t, evs[1]))
	}
	if !json.Valid([]byte(encode(t, evs[1]))) {
		t.Errorf("invalid JSON")
	}
}

func TestReaderAlterTableMidStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE items (id int PRIMARY KEY, name text)`)
	sink := newRecSink()
	rr := startReader(t, url, sink, nil)
	rr.waitReady(t, ctx)
	mustExec(t, ctx, conn, `INSERT INTO items VALUES (1, 'a')`)
	mustExec(t, ctx, conn, `ALTER TABLE items ADD COLUMN tags text[] DEFAULT '{x}'`)
	mustExec(t, ctx, conn, `INSERT INTO items VALUES (2, 'b', '{y,z}')`)
	mustExec(t, ctx, conn, `ALTER TABLE items DROP COLUMN name, ALTER COLUMN id TYPE bigint`)
	mustExec(t, ctx, conn, `UPDATE items SET tags = '{}' WHERE id = 1`)
	mustExec(t, ctx, conn, `ALTER TABLE items RENAME TO things`)
	mustExec(t, ctx, conn, `INSERT INTO things VALUES (3)`)
	evs := waitEvents(t, ctx, sink, 4)
	wants := []string{`{"id":1,"name":"a"}`, `{"id":2,"name":"b","tags":["y","z"]}`, `{"id":1,"tags":[]}`, `{"id":3,"tags":["x"]}`}
	for i, w := range wants {
		if got := recordJSON(t, evs[i].Record); got != w {
			t.Errorf("event %d record %s, want %s", i, got, w)
		}
	}
	if evs[3].Collection != "things" {
		t.Errorf("collection after rename = %q", evs[3].Collection)
	}
}

func TestReaderLargeTransaction(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE big (id int PRIMARY KEY, v text)`)
	sink := newRecSink()
	rr := startReader(t, url, sink, nil)
	rr.waitReady(t, ctx)
	const n = 100000
	mustExec(t, ctx, conn, `INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 100000) g`)
	waitFor(t, ctx, "the big transaction", func() bool { return len(sink.transactions()) >= 1 })
	txs := sink.transactions()
	if len(txs) != 1 || len(txs[0].Events) != n {
		t.Fatalf("got %d transactions, first with %d events; want 1 with %d", len(txs), len(txs[0].Events), n)
	}
	for i, ev := range txs[0].Events {
		id := fmt.Sprint(i + 1)
		if ev.RecordID != id || ev.Position.Index != uint32(i+1) || ev.Position.LSN != txs[0].CommitLSN {
			t.Fatalf("event %d: id %s position %s", i, ev.RecordID, ev.Position)
		}
	}
}

func pubTables(t *testing.T, ctx context.Context, conn *pgx.Conn, pub string) []string {
	t.Helper()
	rows, err := conn.Query(ctx, `SELECT c.relname FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
		JOIN pg_class c ON c.oid = pr.prrelid WHERE p.pubname = $1 ORDER BY 1`, pub)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestReaderKeylessTable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE page_views (path text, viewer text);
		CREATE TABLE posts (id int PRIMARY KEY);
		CREATE TABLE uniq (code text NOT NULL, v int); CREATE UNIQUE INDEX uniq_code ON uniq (code);
		ALTER TABLE uniq REPLICA IDENTITY USING INDEX uniq_code;
		CREATE UNLOGGED TABLE scratch (x int);
		INSERT INTO page_views VALUES ('/old', 'x')`)
	var logBuf strings.Builder
	if err := Setup(ctx, url, "pgrealtime", zerolog.New(&logBuf)); err != nil {
		t.Fatal(err)
	}
	if want := "table public.page_views has no primary key or replica identity: only inserts and truncates are streamed; add a primary key or ALTER TABLE public.page_views REPLICA IDENTITY FULL"; !strings.Contains(logBuf.String(), want) {
		t.Errorf("Setup log lacks the warning %q:\n%s", want, logBuf.String())
	}
	sink := newRecSink()
	rr := startReader(t, url, sink, func(c *Config) { c.SyncInterval = 200 * time.Millisecond })
	rr.waitReady(t, ctx)

	if got := fmt.Sprint(pubTables(t, ctx, conn, "pgrealtime")); got != "[posts uniq]" {
		t.Errorf("pgrealtime publishes %s", got)
	}
	if got := fmt.Sprint(pubTables(t, ctx, conn, "pgrealtime_insert_only")); got != "[page_views]" {
		t.Errorf("pgrealtime_insert_only publishes %s", got)
	}
	// The application's writes keep working.
	mustExec(t, ctx, conn, `INSERT INTO page_views VALUES ('/', 'ann')`)
	mustExec(t, ctx, conn, `UPDATE page_views SET viewer = 'bob'`)
	mustExec(t, ctx, conn, `DELETE FROM page_views WHERE path = '/old'`)
	mustExec(t, ctx, conn, `INSERT INTO uniq VALUES ('k1', 1)`)
	mustExec(t, ctx, conn, `UPDATE uniq SET v = 2`)
	evs := waitEvents(t, ctx, sink, 3)
	if ev := evs[0]; ev.Collection != "page_views" || ev.Action != "create" || ev.RecordID != "" || recordJSON(t, ev.Record) != `{"path":"/","viewer":"ann"}` {
		t.Errorf("event 0 = %s", encode(t, ev))
	}
	if ev := evs[1]; ev.Collection != "uniq" || ev.RecordID != "k1" || evs[2].RecordID != "k1" || evs[2].Action != "update" {
		t.Errorf("replica identity index events: %s %s", encode(t, ev), encode(t, evs[2]))
	}

	// A table created later is picked up by the periodic sync; one that
	// gains a primary key moves to the main publication.
	mustExec(t, ctx, conn, `CREATE TABLE later (id int PRIMARY KEY, v text)`)
	waitFor(t, ctx, "later in publication", func() bool { return fmt.Sprint(pubTables(t, ctx, conn, "pgrealtime")) == "[later posts uniq]" })
	mustExec(t, ctx, conn, `ALTER TABLE page_views ADD COLUMN id serial PRIMARY KEY`)
	waitFor(t, ctx, "page_views moved", func() bool {
		return fmt.Sprint(pubTables(t, ctx, conn, "pgrealtime")) == "[later page_views posts uniq]" &&
			len(pubTables(t, ctx, conn, "pgrealtime_insert_only")) == 0
	})
	mustExec(t, ctx, conn, `INSERT INTO later VALUES (1, 'x')`)
	mustExec(t, ctx, conn, `UPDATE page_views SET viewer = 'cy' WHERE path = '/'`)
	evs = waitEvents(t, ctx, sink, 5)
	if ev := evs[3]; ev.Collection != "later" || ev.RecordID != "1" {
		t.Errorf("event 3 = %s", encode(t, ev))
	}
	if ev := evs[4]; ev.Collection != "page_views" || ev.Action != "update" || ev.RecordID == "" {
		t.Errorf("event 4 = %s", encode(t, ev))
	}
}

func TestSetupLeavesUserPublication(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);
		CREATE PUBLICATION mine FOR TABLE a`)
	log := zerolog.New(zerolog.NewTestWriter(t))
	if err := Setup(ctx, url, "mine", log); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(pubTables(t, ctx, conn, "mine")); got != "[a]" {
		t.Errorf("user publication changed: %s", got)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_publication WHERE pubname = 'mine_insert_only'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("insert-only publication created next to a user publication (%d, %v)", n, err)
	}
	if err := Teardown(ctx, url, "mine", "nosuchslot"); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(pubTables(t, ctx, conn, "mine")); got != "[a]" {
		t.Errorf("teardown touched the user publication: %s", got)
	}
}

func TestReaderPublishFailureIsRetried(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE items (id int PRIMARY KEY)`)
	sink := newRecSink()
	failures := 0
	sink.fail = func(tx *broker.Tx) error {
		if tx.Events[0].RecordID == "2" && failures < 2 {
			failures++
			return errors.New("broker unavailable")
		}
		return nil
	}
	rr := startReader(t, url, sink, nil)
	rr.waitReady(t, ctx)
	for i := 1; i <= 3; i++ {
		mustExec(t, ctx, conn, `INSERT INTO items VALUES ($1)`, i)
	}
	evs := waitEvents(t, ctx, sink, 3)
	for i, ev := range evs {
		if ev.RecordID != fmt.Sprint(i+1) {
			t.Fatalf("event %d id %s: a failed transaction was skipped or reordered", i, ev.RecordID)
		}
	}
	if failures != 2 {
		t.Errorf("failures = %d", failures)
	}
}

// slotState reads the slot's confirmed LSN and the checkpoint row.
func slotState(t *testing.T, ctx context.Context, conn *pgx.Conn, slot string) (confirmed uint64, ckpt broker.Position) {
	t.Helper()
	var lsn string
	var pos *string
	err := conn.QueryRow(ctx, `SELECT s.confirmed_flush_lsn::text, (SELECT position FROM pgrealtime.checkpoint c WHERE c.slot = s.slot_name)
		FROM pg_replication_slots s WHERE s.slot_name = $1`, slot).Scan(&lsn, &pos)
	if err != nil {
		t.Fatalf("slot state: %v", err)
	}
	l, err := pglogrepl.ParseLSN(lsn)
	if err != nil {
		t.Fatal(err)
	}
	if pos != nil {
		if ckpt, err = broker.ParsePosition(*pos); err != nil {
			t.Fatal(err)
		}
	}
	return uint64(l), ckpt
}

func TestReaderCheckpointAndRestartAfterKill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE items (id int PRIMARY KEY)`)
	slot := randomName("slot_")
	sink1 := newRecSink()
	rr := startReader(t, url, sink1, func(c *Config) { c.Slot = slot })
	rr.waitReady(t, ctx)

	// Writer: one row per transaction, until told to stop.
	const total = 400
	writerDone := make(chan error, 1)
	go func() {
		wconn, err := pgx.Connect(ctx, url)
		if err != nil {
			writerDone <- err
			return
		}
		defer wconn.Close(context.Background())
		for i := 1; i <= total; i++ {
			if _, err := wconn.Exec(ctx, `INSERT INTO items VALUES ($1)`, i); err != nil {
				writerDone <- err
				return
			}
			if i%50 == 0 {
				time.Sleep(50 * time.Millisecond)
			}
		}
		writerDone <- nil
	}()

	// Invariant while streaming: once the slot confirmed a transaction's
	// end, the checkpoint names its last event or a later one.
	checkInvariant := func(s *recSink) {
		confirmed, ckpt := slotState(t, ctx, conn, slot)
		for _, tx := range s.transactions() {
			if tx.EndLSN <= confirmed && ckpt.Less(tx.Events[len(tx.Events)-1].Position) {
				t.Fatalf("slot confirmed %X past tx %X but checkpoint is %s", confirmed, tx.EndLSN, ckpt)
			}
		}
	}
	waitFor(t, ctx, "some events", func() bool { checkInvariant(sink1); return len(sink1.events()) >= 100 })
	waitFor(t, ctx, "a checkpoint", func() bool { _, c := slotState(t, ctx, conn, slot); return !c.IsZero() })
	rr.r.stopAbruptly() // no final acknowledgement, no final checkpoint
	rr.shutdown(t)

	_, ckpt := slotState(t, ctx, conn, slot)
	sink2 := newRecSink()
	rr2 := startReader(t, url, sink2, func(c *Config) { c.Slot = slot })
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "all rows", func() bool {
		checkInvariant(sink2)
		evs := sink2.events()
		return len(evs) > 0 && evs[len(evs)-1].RecordID == fmt.Sprint(total)
	})
	rr2.shutdown(t)

	sink2.mu.Lock()
	calls := append([]string(nil), sink2.calls...)
	bases := append([]broker.Position(nil), sink2.bases...)
	sink2.mu.Unlock()
	if len(calls) == 0 || calls[0] != "base" || len(bases) != 1 || bases[0] != ckpt {
		t.Fatalf("restarted reader: calls %v bases %v, want SetBase(%s) first", calls[:min(3, len(calls))], bases, ckpt)
	}
	// Every committed row at least once, in order, and nothing after the
	// checkpoint missing.
	first, second := sink1.events(), sink2.events()
	checkOrdered(t, first)
	checkOrdered(t, second)
	if len(second) == 0 || !ckpt.Less(second[0].Position) {
		t.Errorf("second run starts at %v, not after checkpoint %s", second[0].Position, ckpt)
	}
	seen := map[string]bool{}
	for _, ev := range first {
		seen[ev.RecordID] = true
	}
	for _, ev := range second {
		seen[ev.RecordID] = true
	}
	for i := 1; i <= total; i++ {
		if !seen[fmt.Sprint(i)] {
			t.Fatalf("row %d never delivered", i)
		}
	}
	// The second run resumes exactly after the checkpoint: its first event
	// is the first one after the checkpoint in the first run (if any).
	for _, ev := range first {
		if ckpt.Less(ev.Position) {
			if ev.Position != second[0].Position {
				t.Errorf("first event after checkpoint was %s in run 1, run 2 starts at %s", ev.Position, second[0].Position)
			}
			break
		}
	}
}

func TestReaderPostgresRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c := pgtest.NewCluster(t)
	url := c.URL("postgres")
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE items (id int PRIMARY KEY)`)
	conn.Close(ctx)
	sink := newRecSink()
	rr := startReader(t, url, sink, nil)
	rr.waitReady(t, ctx)
	pgtest.Exec(t, url, `INSERT INTO items SELECT generate_series(1, 10)`, `INSERT INTO items VALUES (11)`)
	waitEvents(t, ctx, sink, 11)

	start := time.Now()
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("restart with the reader connected took %v", d)
	}
	for i := 12; i <= 20; i++ {
		pgtest.Exec(t, url, fmt.Sprintf(`INSERT INTO items VALUES (%d)`, i))
	}
	evs := waitEvents(t, ctx, sink, 20)
	rr.waitReady(t, ctx)
	seen := map[string]int{}
	for _, ev := range evs {
		seen[ev.RecordID]++
	}
	for i := 1; i <= 20; i++ {
		if seen[fmt.Sprint(i)] != 1 {
			t.Errorf("row %d delivered %d times", i, seen[fmt.Sprint(i)])
		}
	}
	checkOrdered(t, evs)

	// A stop with the reader connected completes promptly too.
	start = time.Now()
	if err := c.Stop(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("fast stop took %v", d)
	}
	waitFor(t, ctx, "not ready", func() bool { ok, _ := rr.r.Ready(); return !ok })
	if _, reason := rr.r.Ready(); reason == "" {
		t.Errorf("no reason given while disconnected")
	}
	if err := c.StartServer(ctx); err != nil {
		t.Fatal(err)
	}
	rr.waitReady(t, ctx)
	// The NOTIFY listener reconnected too.
	waitFor(t, ctx, "a notification after the restart", func() bool {
		pgtest.Exec(t, url, `SELECT pg_notify('pgrealtime', '{"collection":"c","event":"back"}')`)
		time.Sleep(50 * time.Millisecond)
		return len(sink.liveEvents()) > 0
	})
}

// TestReaderAnswersKeepalivesPromptly: with no periodic status update due
// (StatusInterval of an hour), a fast stop of Postgres completes only if
// the reader answers the walsender's reply-requested keepalives at once,
// and cancellation stops Run at once although no receive deadline is near.
func TestReaderAnswersKeepalivesPromptly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c := pgtest.NewCluster(t)
	url := c.URL("postgres")
	pgtest.Exec(t, url, `CREATE TABLE items (id int PRIMARY KEY)`)
	sink := newRecSink()
	rr := startReader(t, url, sink, func(c *Config) { c.StatusInterval = time.Hour; c.DisableNotify = true })
	rr.waitReady(t, ctx)
	pgtest.Exec(t, url, `INSERT INTO items VALUES (1)`)
	waitEvents(t, ctx, sink, 1)
	start := time.Now()
	if err := c.Stop(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("fast stop with the reader connected took %v", d)
	}
	if err := c.StartServer(ctx); err != nil {
		t.Fatal(err)
	}
	rr.waitReady(t, ctx)
	pgtest.Exec(t, url, `INSERT INTO items VALUES (2)`)
	waitEvents(t, ctx, sink, 2)
	start = time.Now()
	rr.shutdown(t)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Run returned %v after cancellation", d)
	}
}

func TestSlotAdvancesWhilePublishedTablesIdle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE items (id int PRIMARY KEY); CREATE SCHEMA IF NOT EXISTS pgrealtime;
		CREATE TABLE pgrealtime.noise (id serial PRIMARY KEY, v text)`)
	sink := newRecSink()
	slot := randomName("slot_")
	rr := startReader(t, url, sink, func(c *Config) { c.Slot = slot })
	rr.waitReady(t, ctx)
	mustExec(t, ctx, conn, `INSERT INTO items VALUES (1)`)
	waitEvents(t, ctx, sink, 1)
	for round := 0; round < 3; round++ {
		mustExec(t, ctx, conn, `INSERT INTO pgrealtime.noise (v) SELECT repeat('x', 100) FROM generate_series(1, 1000)`)
		var cur string
		if err := conn.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&cur); err != nil {
			t.Fatal(err)
		}
		target, _ := pglogrepl.ParseLSN(cur)
		waitFor(t, ctx, "confirmed_flush_lsn to pass "+cur, func() bool {
			confirmed, _ := slotState(t, ctx, conn, slot)
			return confirmed >= uint64(target)
		})
	}
	if n := len(sink.transactions()); n != 1 {
		t.Errorf("%d transactions published, want 1", n)
	}
}

func TestNotifyAndBroadcast(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE chat (id int PRIMARY KEY)`)
	sink := newRecSink()
	rr := startReader(t, url, sink, func(c *Config) { c.NotifyChannel = "rt_test" })
	rr.waitReady(t, ctx)
	bad := counterValue(t, metrics.BadPayloads.WithLabelValues("notify"))
	badWAL := counterValue(t, metrics.BadPayloads.WithLabelValues("wal"))

	// The listener connects on its own; retry the first notification until it is seen.
	waitFor(t, ctx, "listener", func() bool {
		mustExec(t, ctx, conn, `SELECT pg_notify('rt_test', '{"collection":"chat","event":"ping"}')`)
		time.Sleep(50 * time.Millisecond)
		return len(sink.liveEvents()) > 0
	})
	n0 := len(sink.liveEvents())
	for _, p := range []string{
		`{"collection":"chat","event":"typing","record_id":"room1","data":{"user":"ann"}}`,
		`not json`,
		`{"collection":"chat"}`,
		`{"collection":"","event":"x"}`,
		`{"collection":"chat","event":"x","record_id":5}`,
		`{"collection":"chat","event":"last"}`,
	} {
		mustExec(t, ctx, conn, `SELECT pg_notify('rt_test', $1)`, p)
	}
	waitFor(t, ctx, "live events", func() bool { return len(sink.liveEvents()) >= n0+2 })
	time.Sleep(200 * time.Millisecond)
	live := sink.liveEvents()[n0:]
	if len(live) != 2 {
		t.Fatalf("%d live events, want 2", len(live))
	}
	ev := live[0]
	if ev.Kind != broker.KindCustom || ev.Collection != "chat" || ev.Name != "typing" || ev.RecordID != "room1" ||
		string(ev.Data) != `{"user":"ann"}` || !ev.Position.IsZero() || time.Since(ev.Timestamp) > time.Minute || ev.Timestamp.Location() != time.UTC {
		t.Errorf("live event %s", encode(t, ev))
	}
	if live[1].Name != "last" {
		t.Errorf("second live event %s", encode(t, live[1]))
	}
	if got := counterValue(t, metrics.BadPayloads.WithLabelValues("notify")) - bad; got != 4 {
		t.Errorf("bad notify payloads counted %v, want 4", got)
	}

	// pgrealtime.broadcast travels with its transaction, in order.
	mustExec(t, ctx, conn, `BEGIN;
		INSERT INTO chat VALUES (1);
		SELECT pgrealtime.broadcast('chat', 'typing', '{"user":"bob"}', '1');
		SELECT pg_logical_emit_message(true, 'pgrealtime', '{"event":"no collection"}');
		SELECT pg_logical_emit_message(true, 'someone_else', 'x');
		INSERT INTO chat VALUES (2);
		SELECT pgrealtime.broadcast('chat', 'done');
		COMMIT`)
	evs := waitEvents(t, ctx, sink, 4)
	want := []string{"create 1 1", "typing 1 2", "create 2 3", "done  4"}
	for i, w := range want {
		e := evs[i]
		name := e.Action
		if e.Kind == broker.KindCustom {
			name = e.Name
		}
		if got := fmt.Sprintf("%s %s %d", name, e.RecordID, e.Position.Index); got != w {
			t.Errorf("event %d = %s (%s), want %s", i, got, encode(t, e), w)
		}
	}
	if string(evs[1].Data) != `{"user": "bob"}` && string(evs[1].Data) != `{"user":"bob"}` {
		t.Errorf("broadcast data %s", evs[1].Data)
	}
	if got := counterValue(t, metrics.BadPayloads.WithLabelValues("wal")) - badWAL; got != 1 {
		t.Errorf("bad wal payloads counted %v, want 1", got)
	}
}

func TestTeardown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE items (id int PRIMARY KEY); CREATE TABLE nokey (v int)`)
	sink := newRecSink()
	slot := randomName("slot_")
	rr := startReader(t, url, sink, func(c *Config) { c.Slot = slot; c.Publication = "tdpub" })
	rr.waitReady(t, ctx)
	mustExec(t, ctx, conn, `INSERT INTO items VALUES (1)`)
	waitEvents(t, ctx, sink, 1)
	// While the reader runs: Teardown terminates its walsender.
	if err := Teardown(ctx, url, "tdpub", slot); err != nil {
		t.Fatal(err)
	}
	rr.shutdown(t)
	if err := Teardown(ctx, url, "tdpub", slot); err != nil {
		t.Fatalf("second teardown: %v", err)
	}
	var slots, pubs, ckpts int
	err := conn.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1),
		(SELECT count(*) FROM pg_publication WHERE pubname LIKE 'tdpub%'),
		(SELECT count(*) FROM pgrealtime.checkpoint WHERE slot = $1)`, slot).Scan(&slots, &pubs, &ckpts)
	if err != nil {
		t.Fatal(err)
	}
	if slots != 0 || pubs != 0 || ckpts != 0 {
		t.Errorf("after teardown: %d slots, %d publications, %d checkpoints", slots, pubs, ckpts)
	}
}

func TestReaderWalLevelNotLogical(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := pgcluster.Start(ctx, pgcluster.Options{Settings: []string{"wal_level = replica"}})
	if err != nil {
		pgtest.NewCluster(t) // reports the missing Postgres the standard way
		t.Fatal(err)
	}
	defer c.Close()
	r, err := NewReader(Config{ConnString: c.URL(""), Publisher: newRecSink(), Live: newRecSink(), Logger: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	err = r.Run(ctx)
	if err == nil || !IsFatal(err) || !errors.Is(err, ErrNotLogical) || !strings.Contains(err.Error(), "set wal_level = logical in postgresql.conf") {
		t.Fatalf("Run = %v, want a fatal error saying how to set wal_level", err)
	}
	if ok, reason := r.Ready(); ok || !strings.Contains(reason, "wal_level") {
		t.Errorf("Ready() = %v, %q", ok, reason)
	}
}

func TestNewReaderValidates(t *testing.T) {
	for _, cfg := range []Config{
		{Publisher: newRecSink(), Live: newRecSink()},
		{ConnString: "postgres://x/y"},
		{ConnString: "postgres://x/y", Publisher: newRecSink()},
		{ConnString: "postgres://x/y", Live: newRecSink()},
		{ConnString: "postgres://x/y", Publisher: newRecSink(), Live: newRecSink(), Slot: "Bad-Slot"},
		{ConnString: "postgres://x/y", Publisher: newRecSink(), Live: newRecSink(), Publication: "a b"},
	} {
		if _, err := NewReader(cfg); err == nil {
			t.Errorf("NewReader(%+v) accepted", cfg)
		}
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestReaderGracefulStopCheckpoints(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE items (id int PRIMARY KEY)`)
	slot := randomName("slot_")
	sink := newRecSink()
	// A long status interval: only the final acknowledgement can write the
	// checkpoint and confirm the last transaction.
	rr := startReader(t, url, sink, func(c *Config) { c.Slot = slot; c.StatusInterval = time.Hour })
	rr.waitReady(t, ctx)
	mustExec(t, ctx, conn, `INSERT INTO items VALUES (1)`)
	mustExec(t, ctx, conn, `INSERT INTO items VALUES (2), (3)`)
	evs := waitEvents(t, ctx, sink, 3)
	rr.shutdown(t)
	txs := sink.transactions()
	confirmed, ckpt := slotState(t, ctx, conn, slot)
	if last := evs[len(evs)-1].Position; ckpt != last || confirmed < txs[len(txs)-1].EndLSN {
		t.Fatalf("after stop: checkpoint %s (want %s), confirmed %X (want >= %X)", ckpt, last, confirmed, txs[len(txs)-1].EndLSN)
	}
	sink2 := newRecSink()
	rr2 := startReader(t, url, sink2, func(c *Config) { c.Slot = slot })
	rr2.waitReady(t, ctx)
	mustExec(t, ctx, conn, `INSERT INTO items VALUES (4)`)
	evs2 := waitEvents(t, ctx, sink2, 1)
	if len(evs2) != 1 || evs2[0].RecordID != "4" {
		t.Errorf("after restart got %d events, first %s; want only row 4", len(evs2), encode(t, evs2[0]))
	}
	sink2.mu.Lock()
	defer sink2.mu.Unlock()
	if len(sink2.bases) != 1 || sink2.bases[0] != ckpt || sink2.calls[0] != "base" {
		t.Errorf("SetBase calls %v (%v), want SetBase(%s) first", sink2.bases, sink2.calls, ckpt)
	}
}

func TestReaderNeedsReplicationPrivilege(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	role := randomName("app_")
	conn := connect(t, ctx, url)
	var db string
	if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, conn, `CREATE ROLE `+role+` LOGIN NOREPLICATION`)
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), url)
		if err == nil {
			_, _ = c.Exec(context.Background(), `DROP OWNED BY `+role+`; DROP ROLE `+role)
			c.Close(context.Background())
		}
	})
	mustExec(t, ctx, conn, `GRANT CREATE ON DATABASE `+db+` TO `+role)
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	roleURL := fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", role, cfg.Host, cfg.Port, db)
	r, err := NewReader(Config{ConnString: roleURL, Slot: randomName("slot_"), Publisher: newRecSink(), Live: newRecSink(), Logger: zerolog.New(zerolog.NewTestWriter(t)), DisableNotify: true})
	if err != nil {
		t.Fatal(err)
	}
	err = r.Run(ctx)
	if err == nil || !IsFatal(err) || !strings.Contains(err.Error(), "ALTER ROLE <user> REPLICATION") {
		t.Fatalf("Run = %v, want a fatal error naming the REPLICATION attribute", err)
	}
}

// timedSink records when each transaction was published.
type timedSink struct {
	*recSink
	tmu   sync.Mutex
	times []time.Time
}

func (s *timedSink) Append(ctx context.Context, tx *broker.Tx) error {
	s.tmu.Lock()
	s.times = append(s.times, time.Now())
	s.tmu.Unlock()
	return s.recSink.Append(ctx, tx)
}

// gaps counts the pauses of at least d between consecutive publications.
func (s *timedSink) gaps(d time.Duration) int {
	s.tmu.Lock()
	defer s.tmu.Unlock()
	n := 0
	for i := 1; i < len(s.times); i++ {
		if s.times[i].Sub(s.times[i-1]) >= d {
			n++
		}
	}
	return n
}

// TestReaderBatchWindow: while caught up under dense traffic the reader
// pauses between transactions (BatchWindow) and delivers everything in
// order; while data waits in the socket (catching up) it never pauses.
func TestReaderBatchWindow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE items (id int PRIMARY KEY)`)
	const window = 200 * time.Millisecond
	slot := randomName("slot_")
	mod := func(c *Config) { c.Slot = slot; c.BatchWindow = window; c.DisableNotify = true }

	// A backlog of single-row transactions, committed while no reader runs.
	rr := startReader(t, url, newRecSink(), mod)
	rr.waitReady(t, ctx)
	rr.shutdown(t)
	const backlog = 10000
	mustExec(t, ctx, conn, fmt.Sprintf(`DO $$ BEGIN FOR i IN 1..%d LOOP INSERT INTO items VALUES (i); COMMIT; END LOOP; END $$`, backlog))
	sink := &timedSink{recSink: newRecSink()}
	start := time.Now()
	startReader(t, url, sink, mod) // shut down by its cleanup
	waitEvents(t, ctx, sink.recSink, backlog)
	// Pausing whenever the 8 KiB read buffer happens to end on a message
	// boundary would take many times window.
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("catching up %d transactions took %v (%d pauses of %v)", backlog, d, sink.gaps(window), window)
	}

	// Dense live traffic the reader keeps up with: a commit every 2 ms
	// (far less than window/4, even on a loaded machine) for half a second
	// or more. Without the pauses the transactions would be published a few
	// milliseconds apart.
	before := sink.gaps(window * 4 / 5)
	mustExec(t, ctx, conn, `SET synchronous_commit = on`)
	const live = 200
	mustExec(t, ctx, conn, fmt.Sprintf(`DO $$ BEGIN FOR i IN %d..%d LOOP INSERT INTO items VALUES (i); COMMIT; PERFORM pg_sleep(0.002); END LOOP; END $$`, backlog+1, backlog+live))
	evs := waitEvents(t, ctx, sink.recSink, backlog+live)
	checkOrdered(t, evs)
	if n := sink.gaps(window*4/5) - before; n < 2 {
		sink.tmu.Lock()
		var gs []string
		for i := len(sink.times) - live; i < len(sink.times); i++ {
			gs = append(gs, sink.times[i].Sub(sink.times[i-1]).Round(100*time.Microsecond).String())
		}
		sink.tmu.Unlock()
		t.Errorf("%d pauses of %v between transactions under dense traffic, want several; gaps %v", n, window, gs)
	}
}
