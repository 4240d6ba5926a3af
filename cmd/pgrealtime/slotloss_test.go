package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrealtime/pgrealtime/internal/pgtest"
)

// TestInvalidatedSlot plays the operations story of the README: with
// max_slot_wal_keep_size set, a long outage makes Postgres invalidate the
// slot; serve then refuses to start (exit 1) and says to run teardown;
// after `teardown --yes` serve starts again with a new slot.
func TestInvalidatedSlot(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cluster := pgtest.NewCluster(t)
	url := cluster.URL("postgres")
	env := []string{"DATABASE_URL=" + url}
	for _, q := range []string{`ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'`, `ALTER SYSTEM SET max_wal_size = '32MB'`,
		`ALTER SYSTEM SET min_wal_size = '32MB'`, `SELECT pg_reload_conf()`, `CREATE TABLE posts (id serial PRIMARY KEY, title text)`} {
		execSQL(ctx, t, url, q)
	}

	addr := freeAddr(t)
	p := startProc(t, env, "serve", "--listen", addr)
	p.waitHTTP(ctx, "http://"+addr+"/readyz", 200)
	p.signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("serve exit %d", code)
	}

	// The outage: write WAL until Postgres gives up on the slot.
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `CREATE TABLE filler (x text)`); err != nil {
		t.Fatal(err)
	}
	for status := ""; status != "lost"; {
		if _, err := conn.Exec(ctx, `INSERT INTO filler SELECT repeat('x', 500) FROM generate_series(1, 20000)`); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `SELECT pg_switch_wal()`); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, `CHECKPOINT`); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(ctx, `SELECT coalesce(wal_status, '') FROM pg_replication_slots WHERE slot_name = 'pgrealtime'`).Scan(&status); err != nil {
			t.Fatal(err)
		}
		if ctx.Err() != nil {
			t.Fatalf("slot not invalidated (wal_status %q)", status)
		}
	}

	p2 := startProc(t, env, "serve", "--listen", freeAddr(t))
	select {
	case <-p2.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("serve kept running on an invalidated slot")
	}
	if code := p2.wait(time.Second); code != 1 {
		t.Fatalf("serve on an invalidated slot: exit %d, want 1", code)
	}
	last := strings.TrimSpace(p2.stderr.String())
	last = last[strings.LastIndexByte(last, '\n')+1:]
	if !strings.Contains(last, "invalidated") || !strings.Contains(last, "teardown --yes") {
		t.Fatalf("last line %q does not say what happened and what to do", last)
	}

	td := startProc(t, env, "teardown", "--yes")
	if code := td.wait(30 * time.Second); code != 0 {
		t.Fatalf("teardown --yes: exit %d: %s", code, td.stderr.String())
	}
	addr3 := freeAddr(t)
	p3 := startProc(t, env, "serve", "--listen", addr3)
	p3.waitHTTP(ctx, "http://"+addr3+"/readyz", 200)
	p3.signal(syscall.SIGTERM)
	if code := p3.wait(10 * time.Second); code != 0 {
		t.Fatalf("serve after teardown: exit %d", code)
	}
}
