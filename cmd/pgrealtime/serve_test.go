package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"

	"github.com/pgrealtime/pgrealtime/broker"
	"github.com/pgrealtime/pgrealtime/internal/pgtest"
)

const testSecret = "process-test-secret"

func adminToken(t *testing.T) string {
	t.Helper()
	tok, err := signToken(testSecret, map[string]any{"sub": "tester", "role": "admin", "exp": time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// server is one `pgrealtime serve` process on a test database.
type server struct {
	*proc
	addr string
}

type serveSetup struct {
	url, slot, pub string
}

func newServeSetup(t *testing.T, schema ...string) serveSetup {
	t.Helper()
	url := pgtest.NewDB(t)
	if len(schema) > 0 {
		pgtest.Exec(t, url, schema...)
	}
	return serveSetup{url: url, slot: uniqueName("slot"), pub: "pgrealtime"}
}

func (s serveSetup) start(ctx context.Context, t *testing.T, extra ...string) *server {
	t.Helper()
	addr := freeAddr(t)
	args := append([]string{"serve", "--listen", addr, "--slot", s.slot, "--publication", s.pub, "--log-level", "debug"}, extra...)
	p := startProc(t, []string{"DATABASE_URL=" + s.url, "PGREALTIME_JWT_SECRET=" + testSecret}, args...)
	p.waitHTTP(ctx, "http://"+addr+"/readyz", 200)
	return &server{proc: p, addr: addr}
}

func execSQL(ctx context.Context, t *testing.T, url string, sql string, args ...any) {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func recordTitle(m msg) string {
	rec, _ := m["record"].(map[string]any)
	s, _ := rec["title"].(string)
	return s
}

// TestServeDeliversAndShutsDown: a client subscribed with an admin token
// receives an INSERT made with SQL; SIGTERM closes it with 1001 and the
// process exits 0 within 10 s.
func TestServeDeliversAndShutsDown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s := newServeSetup(t, `CREATE TABLE posts (id serial PRIMARY KEY, title text)`)
	srv := s.start(ctx, t)
	if !strings.Contains(srv.stderr.String(), `"listening"`) || !strings.Contains(srv.stderr.String(), srv.addr) {
		t.Errorf("no listening log line with %s", srv.addr)
	}

	// No --config: deny by default, said in the log; a user token is refused.
	if !strings.Contains(srv.stderr.String(), "deny by default") {
		t.Error("no deny-by-default warning without --config")
	}
	userTok, err := signToken(testSecret, map[string]any{"sub": "u1", "role": "user", "exp": time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	u := dialWS(ctx, t, srv.addr, userTok)
	if r, _ := u.subscribe(ctx, "u", []string{"posts.*"}, ""); r.str("code") != "forbidden" {
		t.Errorf("user subscribe without rules: %v, want forbidden", r)
	}
	// Default --allowed-origins: same host only.
	_, resp, err := websocket.Dial(ctx, "ws://"+srv.addr+"/realtime", &websocket.DialOptions{
		HTTPHeader: http.Header{"Origin": {"https://evil.example"}, "Authorization": {"Bearer " + adminToken(t)}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("foreign Origin: err %v, response %v; want 403", err, resp)
	}

	c := dialWS(ctx, t, srv.addr, adminToken(t))
	reply, _ := c.subscribe(ctx, "1", []string{"posts.*"}, "")
	if reply.str("type") != "subscribed" {
		t.Fatalf("subscribe: %v", reply)
	}
	execSQL(ctx, t, s.url, `INSERT INTO posts (title) VALUES ('hello')`)
	ev := c.nextEvent(ctx)
	if ev.str("collection") != "posts" || ev.str("action") != "create" || recordTitle(ev) != "hello" || ev.str("position") == "" {
		t.Fatalf("event %v", ev)
	}

	stopAt := time.Now()
	srv.signal(syscall.SIGTERM)
	_, err = c.read(ctx)
	if status := websocket.CloseStatus(err); status != websocket.StatusGoingAway {
		t.Errorf("after SIGTERM the client got %v (status %d), want close 1001", err, status)
	}
	if code := srv.wait(10 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	t.Logf("exited %v after SIGTERM", time.Since(stopAt).Round(time.Millisecond))
}

// TestResumeAcrossRestart: a client that saw events up to position P
// resumes with since=P after pgrealtime was stopped (TERM or KILL) while rows
// were written: it gets exactly the missed rows, then live ones.
func TestResumeAcrossRestart(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			s := newServeSetup(t, `CREATE TABLE posts (id serial PRIMARY KEY, title text)`)
			srv := s.start(ctx, t)
			c := dialWS(ctx, t, srv.addr, adminToken(t))
			if r, _ := c.subscribe(ctx, "1", []string{"posts.*"}, ""); r.str("type") != "subscribed" {
				t.Fatalf("subscribe: %v", r)
			}
			var last string
			for i := 1; i <= 3; i++ {
				execSQL(ctx, t, s.url, `INSERT INTO posts (title) VALUES ($1)`, fmt.Sprintf("before-%d", i))
			}
			for i := 1; i <= 3; i++ {
				ev := c.nextEvent(ctx)
				if want := fmt.Sprintf("before-%d", i); recordTitle(ev) != want {
					t.Fatalf("event %d: %v, want %s", i, ev, want)
				}
				last = ev.str("position")
			}

			stopAt := time.Now()
			srv.signal(sig)
			if code := srv.wait(10 * time.Second); sig == syscall.SIGTERM && code != 0 {
				t.Fatalf("exit code %d after SIGTERM", code)
			}
			t.Logf("stopped in %v (the client does not answer the close handshake)", time.Since(stopAt).Round(time.Millisecond))
			// Written while pgrealtime is down, in two transactions.
			execSQL(ctx, t, s.url, `INSERT INTO posts (title) VALUES ('down-1'), ('down-2')`)
			execSQL(ctx, t, s.url, `INSERT INTO posts (title) VALUES ('down-3')`)

			srv2 := s.start(ctx, t)
			c2 := dialWS(ctx, t, srv2.addr, adminToken(t))
			reply, got := c2.subscribe(ctx, "r", []string{"posts.*"}, last)
			if reply.str("type") != "subscribed" {
				t.Fatalf("resume with since=%s: %v", last, reply)
			}
			execSQL(ctx, t, s.url, `INSERT INTO posts (title) VALUES ('live')`)
			for len(got) == 0 || recordTitle(got[len(got)-1]) != "live" {
				got = append(got, c2.nextEvent(ctx))
			}
			var titles []string
			prev := last
			for _, ev := range got {
				titles = append(titles, recordTitle(ev))
				if pos := ev.str("position"); !positionAfter(t, pos, prev) {
					t.Errorf("position %s does not follow %s", pos, prev)
				} else {
					prev = pos
				}
			}
			if strings.Join(titles, ",") != "down-1,down-2,down-3,live" {
				t.Fatalf("after resume got %v, want down-1,down-2,down-3,live (every missed row once, no duplicate)", titles)
			}

			// A position older than anything retained cannot be served.
			c3 := dialWS(ctx, t, srv2.addr, adminToken(t))
			reply, evs := c3.subscribe(ctx, "old", []string{"posts.*"}, "0/10:1")
			if reply.str("type") != "error" || reply.str("code") != "history_unavailable" || len(evs) > 0 {
				t.Fatalf("since=0/10:1: %v (+%d events), want error history_unavailable", reply, len(evs))
			}
			if r, _ := c3.subscribe(ctx, "again", []string{"posts.*"}, ""); r.str("type") != "subscribed" {
				t.Fatalf("after history_unavailable, subscribe without since: %v", r)
			}
		})
	}
}

func positionAfter(t *testing.T, pos, prev string) bool {
	t.Helper()
	a, err1 := broker.ParsePosition(pos)
	b, err2 := broker.ParsePosition(prev)
	if err1 != nil || err2 != nil {
		t.Errorf("bad positions %q %q", pos, prev)
		return false
	}
	return a.Compare(b) > 0
}

// TestTeardown: without --yes it refuses (exit 2) and drops nothing; with
// --yes the slot and the publication are gone.
func TestTeardown(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s := newServeSetup(t, `CREATE TABLE posts (id serial PRIMARY KEY, title text)`)
	s.pub = uniqueName("pub")
	srv := s.start(ctx, t)
	srv.signal(syscall.SIGTERM)
	if code := srv.wait(10 * time.Second); code != 0 {
		t.Fatalf("serve exit %d", code)
	}
	count := func() (slots, pubs int) {
		conn, err := pgx.Connect(ctx, s.url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, s.slot).Scan(&slots); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_publication WHERE pubname LIKE $1 || '%'`, s.pub).Scan(&pubs); err != nil {
			t.Fatal(err)
		}
		return
	}
	if sl, pb := count(); sl != 1 || pb < 1 {
		t.Fatalf("after serve: %d slots, %d publications; want 1 and at least 1", sl, pb)
	}
	env := []string{"DATABASE_URL=" + s.url}
	no := startProc(t, env, "teardown", "--slot", s.slot, "--publication", s.pub)
	if code := no.wait(30 * time.Second); code != 2 || !strings.Contains(no.stderr.String(), "--yes") {
		t.Fatalf("teardown without --yes: exit %d, stderr %q", code, no.stderr.String())
	}
	if sl, pb := count(); sl != 1 || pb < 1 {
		t.Fatalf("teardown without --yes dropped something: %d slots, %d publications", sl, pb)
	}
	yes := startProc(t, env, "teardown", "--slot", s.slot, "--publication", s.pub, "--yes")
	if code := yes.wait(30 * time.Second); code != 0 {
		t.Fatalf("teardown --yes: exit %d: %s", code, yes.stderr.String())
	}
	if sl, pb := count(); sl != 0 || pb != 0 {
		t.Fatalf("after teardown --yes: %d slots, %d publications; want none", sl, pb)
	}
}

// TestBadConfigExit2Process: the real process exits 2 with one line.
func TestBadConfigExit2Process(t *testing.T) {
	p := startProc(t, []string{"DATABASE_URL=postgres://x@127.0.0.1:1/db"}, "serve", "--max-connections", "abc")
	if code := p.wait(10 * time.Second); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if got := p.stderr.String(); got != "pgrealtime: --max-connections: must be a positive integer, got \"abc\"\n" {
		t.Fatalf("stderr %q", got)
	}
}
