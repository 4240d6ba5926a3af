package cdc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/pgtest"
)

// recSink is a real Sink that records what it is given.
type recSink struct {
	mu      sync.Mutex
	calls   []string // "base", "tx", "live" in call order
	txs     []*broker.Tx
	live    []*broker.Event
	bases   []broker.Position
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

func (s *recSink) Publish(_ context.Context, tx *broker.Tx) error {
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
func startReader(t *testing.T, url string, sink Sink, mod func(*Config)) *runningReader {
	t.Helper()
	cfg := Config{
		ConnString:     url,
		Slot:           randomName("slot_"),
		Sink:           sink,
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
}
