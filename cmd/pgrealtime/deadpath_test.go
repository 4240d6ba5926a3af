package main

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// deadPathRecovery is the bound: from the moment the path to
// Postgres goes dead, a row written meanwhile reaches subscribers within it
// once new connections work again.
const deadPathRecovery = 15 * time.Second

// viaProxy returns dbURL with its host:port replaced by addr.
func viaProxy(t *testing.T, dbURL, addr string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = addr
	return u.String()
}

// TestDeadPathRecovers: pgrealtime reaches Postgres through a TCP path that
// stops carrying packets without closing (blackholing proxy); a row is
// written meanwhile (directly, not through the path); new connections work
// again at once (a NAT or firewall that dropped its state). Postgres still
// holds the old, dead walsender on the slot until wal_sender_timeout (60 s
// by default), so the row arrives in time only if pgrealtime notices the
// dead path, ends its own dead walsender and takes the slot back.
func TestDeadPathRecovers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := newServeSetup(t, `CREATE TABLE posts (id serial PRIMARY KEY, title text)`)
	requireDefaultWalSenderTimeout(ctx, t, s.url)
	pu, err := url.Parse(s.url)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newBlackholeProxy(t, pu.Host)
	direct := s.url
	s.url = viaProxy(t, s.url, proxy.Addr())
	srv := s.start(ctx, t)

	c := dialWS(ctx, t, srv.addr, adminToken(t))
	if r, _ := c.subscribe(ctx, "1", []string{"posts.*"}, ""); r.str("type") != "subscribed" {
		t.Fatalf("subscribe: %v", r)
	}
	execSQL(ctx, t, direct, `INSERT INTO posts (title) VALUES ('before')`)
	before := c.nextEvent(ctx)
	if recordTitle(before) != "before" {
		t.Fatalf("event %v", before)
	}
	// Idle from here: the event is acknowledged and checkpointed, so that
	// nothing but noticing the silence can tell the reader the path died.
	waitCheckpoint(ctx, t, direct, s.slot, before.str("position"))

	proxy.Blackhole()
	start := time.Now()
	execSQL(ctx, t, direct, `INSERT INTO posts (title) VALUES ('during')`)
	proxy.Restore()

	// Wait well past the bound so that a failure says how long it took.
	ev := c.nextEvent(ctx)
	took := time.Since(start)
	if recordTitle(ev) != "during" {
		t.Fatalf("after the dead path: %v", ev)
	}
	t.Logf("row written during the dead path delivered %.1f s after the path went dead", took.Seconds())
	if took > deadPathRecovery {
		t.Errorf("recovered after %v, want within %v", took.Round(100*time.Millisecond), deadPathRecovery)
	}
	srv.waitHTTP(ctx, "http://"+srv.addr+"/readyz", 200)
	// The NOTIFY listener, on the same dead path, reconnected too.
	waitNotify(ctx, t, c, direct)
	logs := srv.stderr.String()
	if !strings.Contains(logs, "ended this process's own previous replication connection") {
		t.Errorf("no log line says the dead walsender was ended:\n%s", tail(logs, 4000))
	}
	srv.signal(syscall.SIGTERM)
	if code := srv.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

// requireDefaultWalSenderTimeout: the dead-path test proves something only
// if Postgres keeps a dead walsender for long (the default 60 s).
func requireDefaultWalSenderTimeout(ctx context.Context, t *testing.T, dbURL string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var ms int
	if err := conn.QueryRow(ctx, `SELECT setting::int FROM pg_settings WHERE name = 'wal_sender_timeout'`).Scan(&ms); err != nil {
		t.Fatal(err)
	}
	if ms != 0 && ms < 60000 {
		t.Fatalf("wal_sender_timeout is %d ms on the test server; this test needs the default 60 s (or more) to prove anything", ms)
	}
}

// waitCheckpoint waits until pgrealtime has checkpointed slot as delivered up
// to pos.
func waitCheckpoint(ctx context.Context, t *testing.T, dbURL, slot, pos string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for {
		var delivered *string
		err := conn.QueryRow(ctx, `SELECT delivered FROM pgrealtime.checkpoint WHERE slot = $1`, slot).Scan(&delivered)
		if err == nil && delivered != nil && *delivered == pos {
			return
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("checkpoint of slot %s never reached %s", slot, pos)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitNotify sends a NOTIFY custom event until c receives it (a NOTIFY sent
// before the listener is back is lost: custom events are live only).
func waitNotify(ctx context.Context, t *testing.T, c *wsClient, dbURL string) {
	t.Helper()
	if r, _ := c.subscribe(ctx, "n", []string{"chat.*"}, ""); r.str("type") != "subscribed" {
		t.Fatalf("subscribe chat.*: %v", r)
	}
	// A read with a deadline would close the WebSocket: one reader instead.
	frames := make(chan msg)
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		for {
			m, err := c.read(rctx)
			if err != nil {
				return
			}
			select {
			case frames <- m:
			case <-rctx.Done():
				return
			}
		}
	}()
	for {
		execSQL(ctx, t, dbURL, `SELECT pg_notify('pgrealtime', '{"collection":"chat","event":"ping","record_id":"1"}')`)
		select {
		case m := <-frames:
			if m.str("type") == "custom_event" {
				return
			}
			t.Fatalf("waiting for the custom event: got %v", m)
		case <-time.After(time.Second):
		case <-ctx.Done():
			t.Fatal("a NOTIFY sent after the dead path never arrived: the NOTIFY listener did not reconnect")
		}
	}
}
