package cdc

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/pgrealtime/pgrealtime/internal/pgtest"
	pgsql "github.com/pgrealtime/pgrealtime/sql"
)

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// eventList renders events as "collection action id" for comparison.
func eventList(s *recSink) string {
	var out []string
	for _, ev := range s.events() {
		out = append(out, ev.Collection+" "+string(ev.Action)+" "+ev.RecordID)
	}
	return strings.Join(out, "; ")
}

// triggerState reports whether the event trigger and its function exist.
func triggerState(t *testing.T, ctx context.Context, conn *pgx.Conn) (trigger, function bool) {
	t.Helper()
	err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = $1),
		to_regprocedure('pgrealtime.publish_tables()') IS NOT NULL`, TriggerName).Scan(&trigger, &function)
	if err != nil {
		t.Fatal(err)
	}
	return trigger, function
}

// startWithTrigger starts a reader as a superuser (sql/setup.sql installs
// the event trigger) with the periodic re-sync off, so that only the
// trigger can publish new tables.
func startWithTrigger(t *testing.T, ctx context.Context, url string) *recSink {
	t.Helper()
	logs := &syncBuffer{}
	sink := newRecSink()
	rr := startReader(t, url, sink, func(c *Config) {
		c.SyncInterval = -1
		c.Logger = zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), logs)).Level(zerolog.InfoLevel)
	})
	rr.waitReady(t, ctx)
	if trigger, function := triggerState(t, ctx, connect(t, ctx, url)); !trigger || !function {
		t.Errorf("after setup as a superuser: event trigger %v, function %v", trigger, function)
	}
	if strings.Contains(logs.String(), TriggerName+" is not installed") {
		t.Errorf("warned about a missing trigger although it is installed:\n%s", logs.String())
	}
	return sink
}

// waitEventList waits (bounded) until the sink's events read want.
func waitEventList(t *testing.T, ctx context.Context, sink *recSink, want string) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	for eventList(sink) != want && wctx.Err() == nil {
		select {
		case <-sink.changed:
		case <-wctx.Done():
		}
	}
	if got := eventList(sink); got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
}

// A table created while the reader runs is published by the transaction
// that creates it: its first rows are streamed, whether written in that
// transaction or right after it; one without a key is insert-only and its
// UPDATE and DELETE keep working.
func TestNewTableRowsArrive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	sink := startWithTrigger(t, ctx, url)

	// CREATE TABLE and INSERT in one transaction.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`CREATE TABLE born (id int PRIMARY KEY, v text)`, `INSERT INTO born VALUES (1, 'first')`} {
		if _, err := tx.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// INSERT right after a separate CREATE TABLE.
	mustExec(t, ctx, conn, `CREATE TABLE next (id int PRIMARY KEY)`)
	mustExec(t, ctx, conn, `INSERT INTO next VALUES (7)`)
	// A table without a key.
	mustExec(t, ctx, conn, `CREATE TABLE nokey (v text)`)
	mustExec(t, ctx, conn, `INSERT INTO nokey VALUES ('x')`)
	mustExec(t, ctx, conn, `UPDATE nokey SET v = 'y'`)
	mustExec(t, ctx, conn, `DELETE FROM nokey`)
	mustExec(t, ctx, conn, `INSERT INTO born VALUES (2, 'second')`)

	waitEventList(t, ctx, sink, "born create 1; next create 7; nokey create ; born create 2")
	if got := fmt.Sprint(pubTables(t, ctx, conn, "pgrealtime")); got != "[born next]" {
		t.Errorf("pgrealtime publishes %s", got)
	}
	if got := fmt.Sprint(pubTables(t, ctx, conn, "pgrealtime_insert_only")); got != "[nokey]" {
		t.Errorf("pgrealtime_insert_only publishes %s", got)
	}
}

// A table that loses its key leaves the main publication in the same
// command, so that its UPDATE keeps working; one that gains a key joins it
// and its updates are streamed.
func TestKeyChangeMovesTable(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	mustExec(t, ctx, conn, `CREATE TABLE losing (id int PRIMARY KEY, v text); CREATE TABLE gaining (v text)`)
	sink := startWithTrigger(t, ctx, url)

	mustExec(t, ctx, conn, `ALTER TABLE losing DROP CONSTRAINT losing_pkey`)
	mustExec(t, ctx, conn, `INSERT INTO losing VALUES (1, 'a')`)
	mustExec(t, ctx, conn, `UPDATE losing SET v = 'b'`)
	mustExec(t, ctx, conn, `DELETE FROM losing`)
	mustExec(t, ctx, conn, `ALTER TABLE gaining ADD COLUMN id serial PRIMARY KEY`)
	mustExec(t, ctx, conn, `INSERT INTO gaining (v) VALUES ('z')`)
	mustExec(t, ctx, conn, `UPDATE gaining SET v = 'zz'`)

	waitEventList(t, ctx, sink, "losing create ; gaining create 1; gaining update 1")
	if got := fmt.Sprint(pubTables(t, ctx, conn, "pgrealtime")); got != "[gaining]" {
		t.Errorf("pgrealtime publishes %s", got)
	}
	if got := fmt.Sprint(pubTables(t, ctx, conn, "pgrealtime_insert_only")); got != "[losing]" {
		t.Errorf("pgrealtime_insert_only publishes %s", got)
	}
}

// Without the right to create event triggers the reader says so once at
// start, with what it means and what to run, and re-syncs the publications
// every DefaultSyncNoTrigger instead of DefaultSyncInterval.
func TestNoTriggerWithoutSuperuser(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	role := randomName("rt_")
	conn := connect(t, ctx, url)
	var db string
	if err := conn.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, conn, `CREATE ROLE `+role+` LOGIN REPLICATION`)
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), url)
		if err == nil {
			_, _ = c.Exec(context.Background(), `DROP OWNED BY `+role+`; DROP ROLE `+role)
			c.Close(context.Background())
		}
	})
	mustExec(t, ctx, conn, `GRANT CREATE ON DATABASE `+db+` TO `+role+`; GRANT CREATE ON SCHEMA public TO `+role)
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	roleURL := fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", role, cfg.Host, cfg.Port, db)

	logs := &syncBuffer{}
	sink := newRecSink()
	rr := startReader(t, roleURL, sink, func(c *Config) {
		c.SyncInterval = 0 // the default
		c.DisableNotify = true
		c.Logger = zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), logs)).Level(zerolog.InfoLevel)
	})
	rr.waitReady(t, ctx)
	if trigger, function := triggerState(t, ctx, conn); trigger || function {
		t.Fatalf("a non-superuser installed: event trigger %v, function %v", trigger, function)
	}
	want := "event trigger " + TriggerName + " is not installed (creating an event trigger needs a superuser): " +
		"a table created while pgrealtime runs is not published until the next publication re-sync (every 2s), and rows written to it before are never streamed; " +
		"to close this window run sql/setup.sql once as a superuser"
	if n := strings.Count(logs.String(), want); n != 1 {
		t.Errorf("the warning %q is logged %d times, want once:\n%s", want, n, logs.String())
	}

	// The shorter window: a table the role creates is published within
	// a few seconds (the 30 s default would miss this deadline).
	rconn := connect(t, ctx, roleURL)
	mustExec(t, ctx, rconn, `CREATE TABLE public.late (id int PRIMARY KEY)`)
	wctx, wcancel := context.WithTimeout(ctx, 4*DefaultSyncNoTrigger)
	defer wcancel()
	for fmt.Sprint(pubTables(t, ctx, conn, "pgrealtime")) != "[late]" {
		select {
		case <-wctx.Done():
			t.Fatalf("table not published within %s; publication has %v", 4*DefaultSyncNoTrigger, pubTables(t, ctx, conn, "pgrealtime"))
		case <-time.After(50 * time.Millisecond):
		}
	}
	mustExec(t, ctx, rconn, `INSERT INTO public.late VALUES (1)`)
	waitEvents(t, ctx, sink, 1)
	if n := strings.Count(logs.String(), want); n != 1 {
		t.Errorf("the warning is logged %d times after re-syncs, want once", n)
	}
	// What the warning says to do: sql/setup.sql once as a superuser. The
	// reader, restarted as its role, then has the trigger: a table the
	// role creates is published with its first rows, and nothing is
	// logged about the trigger.
	rr.shutdown(t)
	mustExec(t, ctx, conn, pgsql.Setup)
	if trigger, function := triggerState(t, ctx, conn); !trigger || !function {
		t.Fatalf("sql/setup.sql as a superuser: event trigger %v, function %v", trigger, function)
	}
	logs2 := &syncBuffer{}
	rr2 := startReader(t, roleURL, sink, func(c *Config) {
		c.Slot = rr.cfg.Slot
		c.DisableNotify = true
		c.Logger = zerolog.New(zerolog.MultiLevelWriter(zerolog.NewTestWriter(t), logs2)).Level(zerolog.InfoLevel)
	})
	rr2.waitReady(t, ctx)
	if strings.Contains(logs2.String(), TriggerName) || strings.Contains(logs2.String(), "cannot re-apply") {
		t.Errorf("restarted reader logged about the setup:\n%s", logs2.String())
	}
	mustExec(t, ctx, rconn, `BEGIN; CREATE TABLE public.later (id int PRIMARY KEY); INSERT INTO public.later VALUES (5); COMMIT`)
	waitEventList(t, ctx, sink, "late create 1; later create 5")

	// Teardown as that role drops its publications and fails only on the
	// superuser's trigger, saying what to run.
	rr2.shutdown(t)
	err = Teardown(ctx, roleURL, "pgrealtime", rr.cfg.Slot)
	if err == nil || !strings.Contains(err.Error(), "run as a superuser: DROP EVENT TRIGGER "+TriggerName) ||
		!strings.Contains(err.Error(), "the slot, the publications and the checkpoint are dropped") {
		t.Fatalf("teardown as the role: %v, want an error saying what to run", err)
	}
	if err := Teardown(ctx, url, "pgrealtime", rr.cfg.Slot); err != nil {
		t.Fatalf("teardown as a superuser: %v", err)
	}
	if trigger, function := triggerState(t, ctx, conn); trigger || function {
		t.Fatalf("after teardown: event trigger %v, function %v", trigger, function)
	}
}

// Teardown removes the event trigger with the last managed publication of
// the database, and keeps it while another one still needs it.
func TestTeardownRemovesTrigger(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := pgtest.NewDB(t)
	conn := connect(t, ctx, url)
	log := zerolog.New(zerolog.NewTestWriter(t))
	for _, pub := range []string{"one", "two"} {
		if err := Setup(ctx, url, pub, log); err != nil {
			t.Fatal(err)
		}
	}
	if trigger, function := triggerState(t, ctx, conn); !trigger || !function {
		t.Fatalf("after setup: event trigger %v, function %v", trigger, function)
	}
	// Both instances' publications get new tables.
	mustExec(t, ctx, conn, `CREATE TABLE t1 (id int PRIMARY KEY); CREATE TABLE t2 (v int)`)
	for pub, want := range map[string]string{"one": "[t1]", "one_insert_only": "[t2]", "two": "[t1]", "two_insert_only": "[t2]"} {
		if got := fmt.Sprint(pubTables(t, ctx, conn, pub)); got != want {
			t.Errorf("%s publishes %s, want %s", pub, got, want)
		}
	}
	if err := Teardown(ctx, url, "one", "noslot"); err != nil {
		t.Fatal(err)
	}
	if trigger, function := triggerState(t, ctx, conn); !trigger || !function {
		t.Fatalf("teardown of one of two publications removed the trigger (%v) or function (%v)", trigger, function)
	}
	if err := Teardown(ctx, url, "two", "noslot"); err != nil {
		t.Fatal(err)
	}
	if trigger, function := triggerState(t, ctx, conn); trigger || function {
		t.Fatalf("after the last teardown: event trigger %v, function %v", trigger, function)
	}
	// DDL still works without them.
	mustExec(t, ctx, conn, `CREATE TABLE t3 (id int PRIMARY KEY)`)
}
