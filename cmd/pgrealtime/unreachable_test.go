package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgrealtime/pgrealtime/internal/pgtest"
)

// TestUnreachableDatabase documents what serve does when Postgres is down at
// startup: it keeps running and retrying, /healthz answers 200, /readyz 503
// with a reason, the log says why; once Postgres is up it becomes ready on
// its own; SIGTERM still exits 0.
func TestUnreachableDatabase(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cluster := pgtest.NewCluster(t)
	if err := cluster.Stop(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := startProc(t, []string{"DATABASE_URL=" + cluster.URL("postgres"), "PGREALTIME_JWT_SECRET=" + testSecret},
		"serve", "--listen", addr, "--slot", uniqueName("slot"))
	p.waitHTTP(ctx, "http://"+addr+"/healthz", 200)

	// Not ready, with a reason, for as long as Postgres is down.
	for i := 0; i < 3; i++ {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var r struct {
			Ready  bool   `json:"ready"`
			Reason string `json:"reason"`
		}
		if resp.StatusCode != 503 || json.Unmarshal(body, &r) != nil || r.Ready || r.Reason == "" {
			t.Fatalf("/readyz while postgres is down: %d %s", resp.StatusCode, body)
		}
		time.Sleep(time.Second)
	}
	if !p.running() {
		t.Fatal("serve exited while postgres was down; it should keep retrying")
	}
	if logs := p.stderr.String(); !strings.Contains(logs, `"level":"error"`) && !strings.Contains(logs, `"level":"warn"`) {
		t.Errorf("no warning or error logged while postgres is down:\n%s", logs)
	}

	if err := cluster.StartServer(ctx); err != nil {
		t.Fatal(err)
	}
	p.waitHTTP(ctx, "http://"+addr+"/readyz", 200)

	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0", code)
	}
}

// TestFatalSetupErrorExit1: a problem retrying cannot fix (here a database
// that does not exist) ends serve with exit 1 and a message saying what to
// change, instead of retrying for ever.
func TestFatalSetupErrorExit1(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	url := pgtest.WithDatabase(t, pgtest.NewDB(t), "no_such_database")
	p := startProc(t, []string{"DATABASE_URL=" + url}, "serve", "--listen", freeAddr(t), "--slot", uniqueName("slot"))
	select {
	case <-p.exited:
	case <-ctx.Done():
		t.Fatal("serve did not exit on a missing database")
	}
	if code := p.wait(time.Second); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	last := strings.TrimSpace(p.stderr.String())
	last = last[strings.LastIndexByte(last, '\n')+1:]
	if !strings.HasPrefix(last, "pgrealtime: ") || !strings.Contains(last, "no_such_database") || !strings.Contains(last, "create the database") {
		t.Fatalf("last stderr line %q", last)
	}
}

// TestPostgresRestartKeepsClients: pgrealtime does not hold Postgres up (a
// fast stop completes quickly while it is connected), keeps its WebSocket
// clients while Postgres is away, and streams again once it is back.
func TestPostgresRestartKeepsClients(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cluster := pgtest.NewCluster(t)
	url := cluster.URL("postgres")
	pgtest.Exec(t, url, `CREATE TABLE posts (id serial PRIMARY KEY, title text)`)
	addr := freeAddr(t)
	p := startProc(t, []string{"DATABASE_URL=" + url, "PGREALTIME_JWT_SECRET=" + testSecret}, "serve", "--listen", addr)
	p.waitHTTP(ctx, "http://"+addr+"/readyz", 200)
	c := dialWS(ctx, t, addr, adminToken(t))
	if r, _ := c.subscribe(ctx, "1", []string{"posts.*"}, ""); r.str("type") != "subscribed" {
		t.Fatalf("subscribe: %v", r)
	}
	execSQL(ctx, t, url, `INSERT INTO posts (title) VALUES ('before')`)
	if ev := c.nextEvent(ctx); recordTitle(ev) != "before" {
		t.Fatalf("event %v", ev)
	}

	start := time.Now()
	if err := cluster.Stop(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("pg_ctl stop -m fast took %v with pgrealtime connected", d)
	}
	p.waitHTTP(ctx, "http://"+addr+"/readyz", 503)
	if err := cluster.StartServer(ctx); err != nil {
		t.Fatal(err)
	}
	p.waitHTTP(ctx, "http://"+addr+"/readyz", 200)
	execSQL(ctx, t, url, `INSERT INTO posts (title) VALUES ('after')`)
	// The same socket, never closed, gets the row written after the restart.
	if ev := c.nextEvent(ctx); recordTitle(ev) != "after" {
		t.Fatalf("after the restart: %v", ev)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
